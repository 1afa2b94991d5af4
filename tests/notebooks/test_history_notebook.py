"""The history notebook runs top to bottom on a known history and bills from the registers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.history_helpers import STEP_WH, make_history

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "history.ipynb"


def _run_notebook(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> dict[str, Any]:
    monkeypatch.setenv("GRIDFLEX_DATA_DIR", str(data_dir))
    namespace: dict[str, Any] = {}
    for cell in json.loads(NOTEBOOK.read_text("utf-8"))["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), str(NOTEBOOK), "exec"), namespace)
    return namespace


def test_notebook_splits_meter_energy_into_15_minute_intervals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_history(tmp_path, readings=20)
    ns = _run_notebook(monkeypatch, tmp_path)
    energy = ns["energy"]
    rows = {(r["asset"], i % 2): r for i, r in enumerate(energy.iter_rows(named=True))}
    # 10 readings before the boundary, 10 after: 9 steps, then 10 steps (incl. the crossing).
    assert rows[("inv-a", 0)]["import_wh"] == pytest.approx(9 * STEP_WH)
    assert rows[("inv-a", 1)]["import_wh"] == pytest.approx(10 * STEP_WH)
    assert rows[("inv-b", 0)]["export_wh"] == pytest.approx(9 * STEP_WH)
    assert rows[("inv-b", 1)]["export_wh"] == pytest.approx(10 * STEP_WH)


def test_notebook_finds_the_frequency_excursion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_history(tmp_path, readings=20)
    ns = _run_notebook(monkeypatch, tmp_path)
    assert len(ns["frequency"]) == 20
    assert len(ns["excursions"]) == 10
