"""Compaction of one day of telemetry: files, bytes, query time before and after, and its cost.

Writes ``--assets`` assets at 5 Hz for ``--seconds`` seconds of 2026-11-24 the way the
pipeline does (``ParquetStreamWriter``, one flush every ``--flush-s`` seconds of data,
so the day holds one small file per flush, like a pipeline flushing every 5 s), then runs
``gridflex.history_store.compact`` on it and prints a table::

    .venv/bin/python bench/history_compact.py                  # 200 assets, 10 min, 5 s flushes
    .venv/bin/python bench/history_compact.py --seconds 120    # a short run

The query is a per-asset summary over the ``telemetry`` view (which de-duplicates), the
best of three runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from gridflex.history import TELEMETRY_SCHEMA, connect
from gridflex.history_store import compact
from pipelines.history_sink import write_parquet_atomic

START_MS = int(dt.datetime(2026, 11, 24, 10, tzinfo=dt.UTC).timestamp() * 1000)
QUERY = (
    "select asset, count(*), max(energy_import_wh) - min(energy_import_wh), avg(power_w) "
    "from telemetry group by asset"
)


def generate(root: Path, assets: int, seconds: int, flush_s: int) -> int:
    """One file per flush of every asset's readings; returns the rows written."""
    rows = 0
    day = root / "telemetry" / "date=2026-11-24"
    for flush, first in enumerate(range(0, seconds * 5, flush_s * 5)):
        n = min(flush_s * 5, seconds * 5 - first)
        seq = [first + i for i in range(n)] * assets
        columns = {
            "site": ["s1"] * (n * assets),
            "asset": [f"a{a:04d}" for a in range(assets) for _ in range(n)],
            "kind": ["evse"] * (n * assets),
            "ts_ms": [START_MS + s * 200 for s in seq],
            "seq": seq,
            "boot": ["b1"] * (n * assets),
            "power_w": [7200.0] * (n * assets),
            "energy_import_wh": [1000.0 + s * 0.4 for s in seq],
        }
        table = pa.Table.from_pydict(
            {f.name: columns.get(f.name, pa.nulls(n * assets, f.type)) for f in TELEMETRY_SCHEMA},
            schema=TELEMETRY_SCHEMA,
        )
        write_parquet_atomic(table, day / f"part-bench-{flush:06d}.parquet")
        rows += table.num_rows
    return rows


def measure(root: Path) -> tuple[int, int, float]:
    """Files, bytes and the best query time (s) of the telemetry stream."""
    files = list((root / "telemetry").rglob("part-*.parquet"))
    size = sum(f.stat().st_size for f in files)
    best = float("inf")
    for _ in range(3):
        con = connect(root)
        t0 = time.perf_counter()
        con.execute(QUERY).fetchall()
        best = min(best, time.perf_counter() - t0)
        con.close()
    return len(files), size, best


def main() -> None:
    """Generate, measure, compact, measure; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--flush-s", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gridflex-compact-"))
    try:
        rows = generate(root, args.assets, args.seconds, args.flush_s)
        before = measure(root)
        t0 = time.perf_counter()
        report = compact(root, grace_s=0)
        took = time.perf_counter() - t0
        after = measure(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{rows:,} telemetry rows, {args.assets} assets at 5 Hz, one file per {args.flush_s} s")
    print("| | files | bytes | bytes/row | query s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, (files, size, query_s) in (("before", before), ("after", after)):
        print(f"| {label} | {files} | {size:,} | {size / rows:.2f} | {query_s:.3f} |")
    print(f"compaction: {took:.2f} s ({report.rows_in:,} rows in, {report.rows_out:,} out)")


if __name__ == "__main__":
    main()
