"""Execute a notebook of ``notebooks/`` with nbclient (a real kernel) and read its results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def run_notebook(
    name: str, data_dir: Path, results_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, dict[str, Any] | None]:
    """Run ``notebooks/{name}.ipynb`` top to bottom on ``data_dir``.

    The kernel inherits ``GRIDFLEX_DATA_DIR`` and ``GRIDFLEX_NOTEBOOK_RESULTS``; a cell
    that raises fails the test (nbclient's ``CellExecutionError``).

    Returns:
        The executed notebook and the JSON the notebook saved (None if it saved none).

    """
    monkeypatch.setenv("GRIDFLEX_DATA_DIR", str(data_dir))
    monkeypatch.setenv("GRIDFLEX_NOTEBOOK_RESULTS", str(results_dir))
    monkeypatch.delenv("GRIDFLEX_SITE", raising=False)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    results = results_dir / f"{name}.json"
    return nb, json.loads(results.read_text("utf-8")) if results.exists() else None


def stream_text(nb: Any) -> str:
    """Everything the notebook's code cells printed (stdout and stderr)."""
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream"
    )


def errors(nb: Any) -> list[Any]:
    """The error outputs of the notebook's cells (a traceback shown to the reader)."""
    return [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
