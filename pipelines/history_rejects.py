"""The history writer's safety net: a row Arrow cannot store is set aside, not fatal.

Validation refuses what the history cannot hold (an integer beyond int64, a number that is
not finite), so this never runs on purpose. It is the last line: before it, one such row
that slipped through made the columnar buffer raise in the dataflow's thread and the
pipeline abort. Now the rows of a batch that fails to convert are tried one by one; the
ones that still fail are appended, as JSON lines with the reason, to
``{data_dir}/rejected/{stream}.jsonl`` (which no view reads), logged and counted; the
others are written as usual. Nothing is lost and the stream goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

__all__ = ["REJECTED_DIR", "convert_rows", "set_aside"]

log = logging.getLogger(__name__)

#: Folder, under the history, of the rows the writer could not store.
REJECTED_DIR = "rejected"

_CONVERSION_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError)


def convert_rows(
    columns: dict[str, list[Any]], schema: pa.Schema
) -> tuple[pa.RecordBatch | None, list[tuple[dict[str, Any], str]]]:
    """``columns`` as one record batch, and the rows that cannot be stored with why.

    The common case is one conversion. Only when it fails is each row converted alone.
    """
    try:
        return pa.RecordBatch.from_pydict(columns, schema=schema), []
    except _CONVERSION_ERRORS:
        pass
    names = list(columns)
    count = len(columns[names[0]]) if names else 0
    good: list[dict[str, Any]] = []
    bad: list[tuple[dict[str, Any], str]] = []
    for i in range(count):
        row = {name: columns[name][i] for name in names}
        try:
            pa.RecordBatch.from_pylist([row], schema=schema)
        except _CONVERSION_ERRORS as exc:
            bad.append((row, f"{type(exc).__name__}: {exc}"[:300]))
        else:
            good.append(row)
    batch = pa.RecordBatch.from_pylist(good, schema=schema) if good else None
    return batch, bad


def set_aside(data_dir: Path, stream: str, rejected: Sequence[tuple[dict[str, Any], str]]) -> None:
    """Append ``rejected`` rows to ``{data_dir}/rejected/{stream}.jsonl`` and log each."""
    folder = data_dir / REJECTED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{stream}.jsonl").open("a", encoding="utf-8") as out:
        for row, reason in rejected:
            out.write(json.dumps({"reason": reason, "row": row}, default=repr) + "\n")
            log.error(
                "history %s: a row of %s cannot be stored (%s); set aside in %s",
                stream,
                row.get("asset"),
                reason,
                folder / f"{stream}.jsonl",
            )
