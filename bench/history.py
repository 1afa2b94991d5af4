"""Benchmark: settlement and a daily summary, gridflex (DuckDB over Parquet) vs PostgreSQL.

Generates telemetry for ``--assets`` inverters at ``--hz`` readings a second until
``--rows`` rows (default 200 x 5 Hz x 10,000 s = 10 million), with numpy, in the real
history layout: the pipeline's own writer (``ParquetStreamWriter.write``: one zstd file per
flush, split at UTC midnight, atomic rename). The values look like a SunSpec device's:
power in whole watts around a setpoint that changes every minute, registers in whole Wh
integrated from the power, frequency to 0.01 Hz, voltage and temperature to 0.1. Every
10th asset reboots once (a new ``boot``, ``seq`` and registers from 0); every 20th loses
2 minutes of readings (a gap). The run starts at 23:00 UTC, so it crosses midnight.

Two layouts of the same rows:

* ``sink``: what ``gridflex pipeline`` writes at this rate, one file per 5 s flush (the
  sink's ``flush_interval_s``), rows in arrival order;
* ``compacted``: the ``sink`` layout after ``gridflex history compact`` (one file per day,
  each reading once, ordered by asset and time and recorded so; the ``telemetry`` view
  then reads it without de-duplicating, the settlement without sorting);
* ``encoded``: hourly files sorted by asset and time, written with delta encoding for
  ``ts_ms`` and ``seq`` and byte-stream split for the registers (what a compaction could
  choose; not the writer's options today). ``--layouts`` picks.

Then, per layout and query, a child process (fresh memory, its own ``getrusage``) opens
``gridflex.history.connect`` and runs the query ``--repeat`` times: the **settlement**
(``SELECT * FROM settlements``: every asset, session and 15-minute interval) and a
**per-asset daily summary** (readings, mean/min/max power, min/max SoC per asset and UTC
day, over the de-duplicating ``telemetry`` view).

PostgreSQL (Debian's ``postgresql``; the server binaries are looked up on PATH and in
``/usr/lib/postgresql/*/bin``) runs the same two queries: the benchmark makes a cluster
with ``initdb`` in a temporary folder, starts it on a free loopback port (as the
``postgres`` user when run as root), loads the rows with ``COPY`` and indexes as its users
would (primary key ``(site, asset, boot, seq)``, which also de-duplicates at load, and
``(asset, ts_ms)``), then ``VACUUM ANALYZE``. Settings: the defaults, except
``work_mem = 64MB`` and ``shared_buffers = 512MB`` (an analyst's first change) and no
fsync (load speed only). Without PostgreSQL the benchmark says so and prints the gridflex
side.

Reported per row: best and median time of the runs, the ratio to PostgreSQL, bytes on disk
per row (Parquet files; PostgreSQL: table + indexes), CPU seconds per run (all threads or
backends) and peak memory (gridflex: the child's max RSS; PostgreSQL: the peak PSS of the
server's processes). Targets (reported, not asserted): 10x faster than PostgreSQL, under
1 s, under 4 bytes per row.

    .venv/bin/python bench/history.py                              # 10 M rows (~10 min)
    .venv/bin/python bench/history.py --rows 200000 --assets 20    # a quick check
    .venv/bin/python bench/history.py --no-postgres --layouts compacted
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._harness import fmt  # noqa: E402
from bench._postgres import Postgres, pg_bin, run_query  # noqa: E402
from gridflex.history import TELEMETRY_SCHEMA, partition_dir, utc_date  # noqa: E402
from gridflex.history_store import compact  # noqa: E402
from gridflex.net import free_port  # noqa: E402
from pipelines.history_sink import ParquetStreamWriter  # noqa: E402

#: 2025-11-29T23:00:00Z: the run crosses midnight, on closed days (compaction merges them).
START_MS = 1_764_457_200_000
INTERVAL_MS = 900_000
MAX_GAP_MS = 60_000

DUCKDB_QUERIES = {
    "settlement": "SELECT * FROM settlements",
    "daily summary": """
        SELECT asset, date, count(*) AS readings, avg(power_w) AS mean_power_w,
               min(power_w) AS min_power_w, max(power_w) AS max_power_w,
               min(soc_pct) AS min_soc_pct, max(soc_pct) AS max_soc_pct
        FROM telemetry GROUP BY asset, date
    """,
}
# The same summary over every stored copy (no de-duplication): what reading the
# at-least-once history costs, against PostgreSQL's table made unique at load.
DUCKDB_QUERIES["daily summary, no de-dup"] = DUCKDB_QUERIES["daily summary"].replace(
    "FROM telemetry ", "FROM telemetry_copies "
)
# The settlement with every reading through the general window (one window over all of
# them, a sort), as before the compacted days were read in a streaming pass.
DUCKDB_QUERIES["settlement, no streaming"] = DUCKDB_QUERIES["settlement"]
#: Queries run with ``register(con, streams=0)``.
NO_STREAMING = frozenset({"settlement, no streaming"})
#: The PostgreSQL query each gridflex query is compared with.
PG_EQUIVALENT = {
    "daily summary, no de-dup": "daily summary",
    "settlement, no streaming": "settlement",
}

# The settlements view in PostgreSQL's dialect (the rows are unique by the primary key, so
# no de-duplication step; the registers are never NULL here, so plain lag()).
PG_QUERIES = {
    "settlement": f"""
WITH pairs AS (
    SELECT site, asset, transaction_id AS session_id,
           lag(ts_ms) OVER w AS start_ms, ts_ms AS end_ms,
           energy_import_wh - lag(energy_import_wh) OVER w AS d_imp,
           energy_export_wh - lag(energy_export_wh) OVER w AS d_exp
    FROM telemetry
    WHERE energy_import_wh IS NOT NULL OR energy_export_wh IS NOT NULL
    WINDOW w AS (PARTITION BY site, asset ORDER BY ts_ms, boot, seq)
), seg AS (
    SELECT site, asset, session_id, start_ms, end_ms,
           CASE WHEN d_imp > 0 THEN d_imp ELSE 0 END AS e_imp,
           CASE WHEN d_exp > 0 THEN d_exp ELSE 0 END AS e_exp,
           coalesce(d_imp < 0 OR d_exp < 0, false) AS reset,
           end_ms - start_ms > {MAX_GAP_MS} AS gap,
           start_ms / {INTERVAL_MS} AS k0, (end_ms - 1) / {INTERVAL_MS} AS k1
    FROM pairs WHERE start_ms IS NOT NULL
), pieces AS (
    SELECT site, asset, session_id, k0 AS k, 1.0::float8 AS share, e_imp, e_exp, reset, gap
    FROM seg WHERE k1 <= k0
    UNION ALL
    SELECT site, asset, session_id, k,
           (least(end_ms, (k + 1) * {INTERVAL_MS}) - greatest(start_ms, k * {INTERVAL_MS}))::float8
               / (end_ms - start_ms),
           e_imp, e_exp, reset, gap
    FROM seg, generate_series(k0, k1) AS k WHERE k1 > k0
)
SELECT site, asset, session_id, k * {INTERVAL_MS} AS interval_start_ms,
       (k + 1) * {INTERVAL_MS} AS interval_end_ms,
       sum(e_imp * share) AS energy_import_wh, sum(e_exp * share) AS energy_export_wh,
       CASE WHEN bool_or(gap) AND bool_or(reset) THEN 'gap,reset' WHEN bool_or(gap) THEN 'gap'
            WHEN bool_or(reset) THEN 'reset' ELSE 'ok' END AS quality
FROM pieces GROUP BY site, asset, session_id, k
""",
    "daily summary": """
SELECT asset, (to_timestamp(ts_ms / 1000.0) AT TIME ZONE 'UTC')::date AS date,
       count(*) AS readings, avg(power_w) AS mean_power_w, min(power_w) AS min_power_w,
       max(power_w) AS max_power_w, min(soc_pct) AS min_soc_pct, max(soc_pct) AS max_soc_pct
FROM telemetry GROUP BY 1, 2
""",
}

_PG_TYPES = {
    pa.string(): "text",
    pa.int64(): "bigint",
    pa.float64(): "double precision",
    pa.bool_(): "boolean",
}


# --------------------------------------------------------------------------- data


def generate(rows: int, assets: int, hz: int, seed: int = 1) -> pa.Table:
    """Telemetry rows in arrival order (tick by tick, every asset per tick), as Arrow."""
    rng = np.random.default_rng(seed)
    ticks = -(-rows // assets)
    period_ms = 1000 // hz
    dt_h = 1 / hz / 3600
    shape = (ticks, assets)
    tick = np.arange(ticks, dtype=np.int64)[:, None]
    # Power: a setpoint per asset and minute (100 W steps) plus meter noise, whole watts.
    minute = tick // (60 * hz)
    levels = rng.integers(-50, 51, size=(int(minute[-1, 0]) + 1, assets)) * 100.0
    setpoint = levels[minute[:, 0]]
    power = setpoint + rng.integers(-15, 16, size=shape)
    imported = np.cumsum(np.clip(power, 0, None) * dt_h, axis=0)
    exported = np.cumsum(np.clip(-power, 0, None) * dt_h, axis=0)
    seq = np.broadcast_to(tick, shape).copy()
    boot = np.zeros(shape, dtype=np.int64)
    offset_imp = rng.integers(10_000, 10_000_000, size=assets).astype(np.float64)
    offset_exp = rng.integers(10_000, 10_000_000, size=assets).astype(np.float64)
    imp = imported + offset_imp
    exp = exported + offset_exp
    keep = np.ones(shape, dtype=bool)
    for j in range(assets):
        if j % 10 == 5:  # reboots once: new boot, seq and registers from 0
            at = int(rng.integers(ticks // 4, 3 * ticks // 4))
            boot[at:, j] = 1
            seq[at:, j] -= at
            imp[at:, j] = imported[at:, j] - imported[at - 1, j]
            exp[at:, j] = exported[at:, j] - exported[at - 1, j]
        if j % 20 == 3:  # two minutes without readings
            at = int(rng.integers(0, max(1, ticks - 120 * hz)))
            keep[at : at + 120 * hz, j] = False
    capacity_wh = 10_000.0
    soc = np.clip(50.0 + (imported - exported) / capacity_wh * 100, 5, 95).round(1)
    t_s = tick * (1 / hz)
    freq = (50 + 0.05 * np.sin(t_s / 300.0) + rng.normal(0, 0.005, size=shape)).round(2)
    voltage = (230 + rng.normal(0, 1, size=assets) + rng.normal(0, 0.5, size=shape)).round(1)
    current = (np.abs(power) / voltage).round(1)
    temp = (30 + rng.integers(0, 10, size=assets) + np.sin(t_s / 1800.0) * 3).round(1)
    ts = START_MS + tick * period_ms + rng.integers(0, 8, size=shape)

    flat = keep.ravel()
    n = int(flat.sum())
    asset_index = np.broadcast_to(np.arange(assets), shape).ravel()[flat]
    names = pa.array([f"inv{j:05d}" for j in range(assets)])
    boots = pa.array([f"boot-{j:05d}-{b}" for j in range(assets) for b in range(2)])
    status = np.where(power > 50, 0, np.where(power < -50, 1, 2)).ravel()[flat]

    def col(values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(values, shape).ravel()[flat])

    columns: dict[str, Any] = {
        "site": pa.array(np.full(n, "bench", dtype=object), pa.string()),
        "asset": pc.take(names, pa.array(asset_index)),
        "kind": pa.array(np.full(n, "inverter", dtype=object), pa.string()),
        "ts_ms": col(ts),
        "seq": col(seq),
        "boot": pc.take(boots, pa.array(asset_index * 2 + col(boot))),
        "power_w": col(power.astype(np.float64)),
        "freq_hz": col(freq),
        "voltage_v": col(voltage),
        "current_a": col(current),
        "soc_pct": col(soc),
        "energy_import_wh": np.floor(col(imp)),
        "energy_export_wh": np.floor(col(exp)),
        "temp_c": col(temp),
        "setpoint_w": col(setpoint),
        "status": pc.take(pa.array(["charging", "discharging", "idle"]), pa.array(status)),
        "device_status": pa.array(np.full(n, "RUNNING", dtype=object), pa.string()),
        "register_decreased": pa.array(np.zeros(n, dtype=bool)),
    }
    arrays = [
        columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in TELEMETRY_SCHEMA
    ]
    table = pa.Table.from_arrays(
        [pa.array(a, f.type) if not isinstance(a, pa.Array | pa.ChunkedArray) else a
         for a, f in zip(arrays, TELEMETRY_SCHEMA, strict=True)],
        schema=TELEMETRY_SCHEMA,
    )  # fmt: skip
    return table.slice(0, min(rows, table.num_rows))


#: Column encodings of the ``encoded`` layout: delta for the integers that grow steadily,
#: byte-stream split for the registers, dictionaries for the rest.
_DELTA = ("ts_ms", "seq")
_SPLIT = ("energy_import_wh", "energy_export_wh")


def _write_encoded(part: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        part,
        path,
        compression="zstd",
        use_dictionary=[n for n in part.column_names if n not in (*_DELTA, *_SPLIT)],
        column_encoding={
            **dict.fromkeys(_DELTA, "DELTA_BINARY_PACKED"),
            **dict.fromkeys(_SPLIT, "BYTE_STREAM_SPLIT"),
        },
    )


def write_layout(table: pa.Table, data_dir: Path, file_s: int, *, sort: bool, encoded: bool) -> int:
    """Write ``table`` with the pipeline's writer, one file per ``file_s`` of readings.

    ``encoded``: the same files written with :func:`_write_encoded` instead (chunks are
    aligned to the start, 23:00, so none crosses midnight).
    """
    writer = ParquetStreamWriter(data_dir, "telemetry", ts_column="ts_ms", name="bench")
    chunk_ms = file_s * 1000
    ts = table.column("ts_ms").to_numpy()
    bucket = (ts - START_MS) // chunk_ms
    # Rows are in arrival order, so buckets are contiguous runs (jitter < one tick).
    edges = np.flatnonzero(np.diff(bucket)) + 1
    starts = [0, *edges.tolist()]
    ends = [*edges.tolist(), table.num_rows]
    for a, b in zip(starts, ends, strict=True):
        part = table.slice(a, b - a)
        if sort:
            part = part.sort_by([("asset", "ascending"), ("ts_ms", "ascending")])
        if encoded:
            first_ms = int(part.column("ts_ms")[0].as_py())
            day = partition_dir(data_dir, "telemetry", utc_date(first_ms))
            _write_encoded(part, day / f"part-encoded-{len(starts)}-{a:012d}.parquet")
        else:
            writer.write(part.to_batches())
    return len(starts) if encoded else len(writer.files_written)


def dir_bytes(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- gridflex side


def duckdb_child(data_dir: str, query: str, repeat: int) -> None:
    """Run one query ``repeat`` times in this (child) process; print times and CPU as JSON."""
    from gridflex.billing.views import register
    from gridflex.history import connect

    con = connect(data_dir)
    if query in NO_STREAMING:
        register(con, streams=0)
    times, cpus, rows = [], [], 0
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        rows = len(con.execute(DUCKDB_QUERIES[query]).fetchall())
        times.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child would report the
    # parent's peak (the generated table) instead of its own.
    status = Path("/proc/self/status").read_text(encoding="ascii").splitlines()
    peak = next(int(ln.split()[1]) for ln in status if ln.startswith("VmHWM:")) / 1024
    print(json.dumps({"times": times, "cpu": cpus, "rows": rows, "peak_mib": peak}))


def run_duckdb(data_dir: Path, query: str, repeat: int) -> dict[str, Any]:
    """Run :func:`duckdb_child` in a fresh interpreter; its JSON."""
    done = subprocess.run(
        [sys.executable, __file__, "--duckdb-child", str(data_dir), query, str(repeat)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"gridflex child failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- PostgreSQL


def load_postgres(pg: Postgres, data_dir: Path, work: Path) -> dict[str, float]:
    """Create the table, COPY the rows in, index, VACUUM ANALYZE; seconds and bytes."""
    import duckdb

    columns = ", ".join(f"{f.name} {_PG_TYPES[f.type]}" for f in TELEMETRY_SCHEMA)
    pg.psql(f"CREATE TABLE telemetry ({columns})")
    csv_path = work / "telemetry.csv"
    glob = (data_dir / "telemetry" / "date=*" / "part-*.parquet").as_posix()
    names = ", ".join(TELEMETRY_SCHEMA.names)
    duckdb.connect().execute(
        f"COPY (SELECT {names} FROM read_parquet('{glob}')) TO '{csv_path}' (HEADER false)"
    )
    started = time.perf_counter()
    with csv_path.open("rb") as fh:
        pg.psql("COPY telemetry FROM STDIN WITH (FORMAT csv)", stdin=fh)
    copy_s = time.perf_counter() - started
    csv_path.unlink()
    started = time.perf_counter()
    pg.psql("ALTER TABLE telemetry ADD PRIMARY KEY (site, asset, boot, seq)")
    pg.psql("CREATE INDEX telemetry_asset_ts ON telemetry (asset, ts_ms)")
    pg.psql("VACUUM ANALYZE telemetry")
    index_s = time.perf_counter() - started
    size = int(pg.psql("SELECT pg_total_relation_size('telemetry')").strip())
    return {"copy_s": copy_s, "index_s": index_s, "bytes": size}


# --------------------------------------------------------------------------- main


def _row(name: str, query: str, result: dict[str, Any], bytes_per_row: float) -> list[str]:
    times = result["times"]
    return [
        name,
        query,
        fmt(min(times), ".3f"),
        fmt(statistics.median(times), ".3f"),
        fmt(bytes_per_row, ".2f"),
        fmt(statistics.median(result["cpu"]), ".2f"),
        fmt(result["peak_mib"], ".0f"),
    ]


def main() -> int:
    """Generate, write, query, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--assets", type=int, default=200)
    parser.add_argument("--hz", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--layouts", default="sink,compacted,encoded", help="comma list: sink, compacted, encoded"
    )
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--keep", type=Path, default=None, help="keep the data in this folder")
    args = parser.parse_args()
    layouts = [x for x in args.layouts.split(",") if x]

    work = Path(tempfile.mkdtemp(prefix="gridflex-bench-history-"))
    work.chmod(0o711)  # the PostgreSQL server may run as another user (postgres)
    try:
        started = time.perf_counter()
        table = generate(args.rows, args.assets, args.hz)
        gen_s = time.perf_counter() - started
        rows = table.num_rows
        span_s = rows / args.assets / args.hz
        print(
            f"{rows:,} rows: {args.assets} assets at {args.hz} Hz for ~{span_s:,.0f} s, "
            f"generated in {gen_s:.1f} s",
            flush=True,
        )
        dirs: dict[str, Path] = {}
        sizes: dict[str, int] = {}
        for layout in layouts:
            data_dir = (args.keep or work) / layout
            started = time.perf_counter()
            if layout == "compacted":  # what `gridflex history compact` leaves of the sink's
                write_layout(table, data_dir, 5, sort=False, encoded=False)
                files = compact(data_dir, before=dt.date(2100, 1, 1), grace_s=0).partitions
            else:
                files = write_layout(
                    table,
                    data_dir,
                    5 if layout == "sink" else 3600,
                    sort=layout != "sink",
                    encoded=layout == "encoded",
                )
            sizes[layout] = dir_bytes(data_dir)
            dirs[layout] = data_dir
            print(
                f"layout {layout}: {files} files, {sizes[layout] / 2**20:.1f} MiB, "
                f"written in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        del table

        results: list[list[str]] = []
        best: dict[tuple[str, str], float] = {}
        for layout, data_dir in dirs.items():
            for query in DUCKDB_QUERIES:
                result = run_duckdb(data_dir, query, args.repeat)
                best[(layout, query)] = min(result["times"])
                results.append(_row(f"gridflex {layout}", query, result, sizes[layout] / rows))
                print(f"  gridflex {layout} {query}: {result['rows']} result rows", flush=True)

        bin_dir = None if args.no_postgres else pg_bin()
        if bin_dir is None:
            why = (
                "--no-postgres"
                if args.no_postgres
                else "not installed (apt-get install postgresql)"
            )
            print(f"PostgreSQL: {why}; the gridflex side only", flush=True)
        else:
            pg = Postgres(bin_dir, work / "pg", free_port())
            pg.root.mkdir()
            try:
                pg.start()
                version = pg.psql("SHOW server_version").strip()
                load = load_postgres(pg, dirs[layouts[0]], work)
                print(
                    f"PostgreSQL {version}: COPY {load['copy_s']:.1f} s, primary key + index + "
                    f"VACUUM ANALYZE {load['index_s']:.1f} s, {load['bytes'] / 2**20:.1f} MiB",
                    flush=True,
                )
                for query, sql in PG_QUERIES.items():
                    result = run_query(pg, sql, args.repeat)
                    best[("postgres", query)] = min(result["times"])
                    results.append(_row("PostgreSQL", query, result, load["bytes"] / rows))
            finally:
                pg.stop()

        header = ["engine", "query", "best s", "median s", "B/row", "CPU s", "peak MiB"]
        header.append("x PostgreSQL")
        for row in results:
            layout = row[0].removeprefix("gridflex ")
            pg_best = best.get(("postgres", PG_EQUIVALENT.get(row[1], row[1])))
            mine = best.get((layout, row[1]))
            if row[0] == "PostgreSQL" or pg_best is None or mine is None:
                row.append("-")
            else:
                row.append(f"{pg_best / mine:.1f}")
        widths = [max(len(h), *(len(r[i]) for r in results)) for i, h in enumerate(header)]
        print()
        print(
            "  ".join(
                h.rjust(w) if i > 1 else h.ljust(w)
                for i, (h, w) in enumerate(zip(header, widths, strict=True))
            )
        )
        print("-" * (sum(widths) + 2 * (len(widths) - 1)))
        for row in results:
            print(
                "  ".join(
                    c.rjust(w) if i > 1 else c.ljust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
        print(
            f"\nbest/median of {args.repeat} runs; B/row: bytes on disk per telemetry row; "
            "CPU s: median per run; x PostgreSQL: PostgreSQL's best / gridflex's best",
            flush=True,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--duckdb-child":
        duckdb_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        sys.exit(0)
    sys.exit(main())
