"""Compaction and retention of the Parquet history (gridflex.history_store, history_cli)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gridflex.contract import AssetStatus, ChargingSession, Telemetry
from gridflex.history import (
    SCHEMAS,
    STREAMS,
    TELEMETRY_SCHEMA,
    connect,
    file_metadata,
    utc_date,
)
from gridflex.history_store import CRASH_ENV, UpkeepBusy, _upkeep_lock, compact, prune
from pipelines.history_events import session_row, status_row
from pipelines.history_sink import ParquetStreamWriter, telemetry_row, write_parquet_atomic
from tests.history_helpers import BOUNDARY_MS, add_dispatch, make_history

ROOT = Path(__file__).resolve().parents[2]
DAY_MS = 86_400_000
#: The day of BOUNDARY_MS (2026-11-25) and the one before it.
DAY = dt.date(2026, 11, 25)
#: Views whose answer is the stored files themselves, not the history's content.
STORAGE_VIEWS = {
    "telemetry_copies",
    "telemetry_compacted",
    "telemetry_files",
    "telemetry_sorted_partitions",
}


def _reading(asset: str, ts: int, seq: int, wh: float, **fields: Any) -> Telemetry:
    return Telemetry(
        site="s1", asset=asset, kind="evse", ts_ms=ts, seq=seq, boot="b1", power_w=7200.0,
        energy_import_wh=wh, soc_pct=40.0 + seq / 10, **fields,
    )  # fmt: skip


def make_fragmented_history(root: Path) -> None:
    """A history of many small files over two closed days and today, with duplicates.

    The fixtures of the billing tests (one file per stream), then an EV charging across
    midnight before ``DAY`` in five flushes, one flush written twice (a redelivery after a
    restart), one file in the schema of before ``register_decreased`` and
    ``device_status`` existed (without metadata), status changes, a transaction, and rows
    of today (which compaction leaves alone).
    """
    make_history(root)
    add_dispatch(root)
    start = BOUNDARY_MS - 12 * 3_600_000 - 20_000  # 2026-11-24T23:59:40Z
    for flush in range(5):
        writer = ParquetStreamWriter(root, "telemetry", ts_column="ts_ms", name=f"ev{flush}")
        rows = []
        for i in range(flush * 6, flush * 6 + 6):
            rows.append(telemetry_row(_reading("cs-1", start + i * 1000, i, 500 + 2 * i,
                                               transaction_id="tx-1")))  # fmt: skip
        writer.add(rows)
        writer.flush()
        if flush == 2:  # the same rows again, another file
            again = ParquetStreamWriter(root, "telemetry", ts_column="ts_ms", name="replay")
            again.add(rows)
            again.flush()
    old = TELEMETRY_SCHEMA
    old = old.remove(old.get_field_index("register_decreased"))
    old = old.remove(old.get_field_index("device_status"))
    legacy = [
        {k: v for k, v in telemetry_row(_reading("cs-2", BOUNDARY_MS + i * 1000, i, 10 * i)).items()
         if k in old.names}
        for i in range(4)
    ]  # fmt: skip
    legacy_dir = root / "telemetry" / f"date={DAY.isoformat()}"
    pq.write_table(pa.Table.from_pylist(legacy, schema=old), legacy_dir / "part-legacy.parquet")

    statuses = ParquetStreamWriter(root, "status_changes", ts_column="ts_ms", name="st")
    for i, (state, faults) in enumerate(
        [("online", []), ("online", []), ("faulted", ["GroundFault"]), ("online", [])]
    ):
        st = AssetStatus(
            site="s1", asset="cs-1", kind="evse", ts_ms=BOUNDARY_MS + i * 1000, online=True,
            state=state, faults=faults, reason=f"r{i}",  # type: ignore[arg-type]
        )  # fmt: skip
        statuses.add([status_row(st)])
        statuses.flush()
    sessions = ParquetStreamWriter(root, "transactions", ts_column="ts_ms", name="tx")
    for event, end, stop in (("started", None, None), ("ended", start + 29_000, 558.0)):
        s = ChargingSession(
            site="s1", asset="cs-1", ts_ms=(end or start) + 5, event=event,  # type: ignore[arg-type]
            transaction_id="tx-1", start_ms=start, end_ms=end, meter_start_wh=500.0,
            meter_stop_wh=stop, id_token_hash="ab" * 32,
        )  # fmt: skip
        sessions.add([session_row(s)])
        sessions.flush()
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    for flush in range(2):
        writer = ParquetStreamWriter(root, "telemetry", ts_column="ts_ms", name=f"today{flush}")
        writer.add([telemetry_row(_reading("cs-9", now_ms - 5000 + flush, flush, 1.0))])
        writer.flush()


def view_contents(root: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every view's full answer, in a stable order."""
    con = connect(root)
    try:
        views = [
            r[0]
            for r in con.execute(
                "select view_name from duckdb_views() where not internal order by 1"
            ).fetchall()
            if r[0] not in STORAGE_VIEWS
        ]
        return {v: con.execute(f"select * from {v} order by all").fetchall() for v in views}
    finally:
        con.close()


def parts(root: Path, stream: str, day: dt.date) -> list[Path]:
    return sorted((root / stream / f"date={day.isoformat()}").glob("part-*.parquet"))


@pytest.fixture
def history(tmp_path: Path) -> Path:
    root = tmp_path / "hist"
    make_fragmented_history(root)
    return root


def test_compaction_leaves_every_view_unchanged_and_one_file_per_closed_day(
    history: Path,
) -> None:
    before = view_contents(history)
    assert {"telemetry", "status_changes", "transactions", "settlements", "sessions"} <= set(before)
    assert all(before[v] for v in ("telemetry", "status_changes", "transactions", "settlements"))
    assert len(parts(history, "telemetry", DAY - dt.timedelta(days=1))) == 5  # 4 + the replay
    today = dt.datetime.now(dt.UTC).date()
    today_files = parts(history, "telemetry", today)

    report = compact(history, grace_s=0)

    assert view_contents(history) == before
    for stream in STREAMS:
        for day_dir in (history / stream).glob("date=*"):
            day = dt.date.fromisoformat(day_dir.name.removeprefix("date="))
            files = parts(history, stream, day)
            if day < today:
                assert len(files) == 1, (stream, day, files)
            assert not list(day_dir.glob(".*")), "a hidden file was left behind"
    assert parts(history, "telemetry", today) == today_files
    assert report.rows_in - report.rows_out == 6  # the replayed flush
    assert compact(history, grace_s=0).partitions == 0  # nothing left to merge


def test_a_compacted_file_is_in_the_current_schema_with_its_metadata(history: Path) -> None:
    merged_from = len(parts(history, "telemetry", DAY))
    compact(history, streams=["telemetry"], grace_s=0)
    (merged,) = parts(history, "telemetry", DAY)
    assert merged.name.startswith("part-compact-")
    meta = pq.read_metadata(merged).metadata
    assert meta[b"gridflex.stream"] == b"telemetry"
    assert meta[b"gridflex.schema_version"] == b"2"
    assert meta[b"gridflex.compacted_from"] == str(merged_from).encode()
    table = pq.ParquetFile(merged).read()
    assert table.schema.names == TELEMETRY_SCHEMA.names
    legacy = table.filter(pa.compute.equal(table["asset"], "cs-2"))
    assert legacy["device_status"].null_count == legacy.num_rows == 4


def test_compaction_only_touches_the_streams_and_days_asked_for(history: Path) -> None:
    ack_files = parts(history, "acks", DAY)
    compact(history, streams=["telemetry"], before=DAY, grace_s=0)
    assert len(parts(history, "telemetry", DAY - dt.timedelta(days=1))) == 1
    assert len(parts(history, "telemetry", DAY)) > 1  # not before DAY
    assert parts(history, "acks", DAY) == ack_files


@pytest.mark.parametrize("step", ["written", "swapped", "removed-one"])
def test_a_compaction_killed_mid_way_leaves_whole_files_and_the_same_answers(
    history: Path, step: str
) -> None:
    before = view_contents(history)
    files_before = {p.name for p in history.rglob("part-*.parquet")}
    env = {**os.environ, "PYTHONPATH": str(ROOT), CRASH_ENV: step}
    done = subprocess.run(
        [sys.executable, "-m", "gridflex.cli", "history", "compact",
         "--data-dir", str(history), "--grace-s", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]

    visible = {p.name for p in history.rglob("part-*.parquet")}
    new = visible - files_before
    gone = files_before - visible
    if step == "written":
        assert (new, gone) == (set(), set())  # the merged file is still hidden
        assert list(history.rglob(".compact-*.tmp"))
    elif step == "swapped":  # killed after the first partition's merged file went in
        assert len(new) == 1 and next(iter(new)).startswith("part-compact-")
        assert gone == set()
    else:  # every merged file is in, one original removed
        assert len(new) > 1 and all(n.startswith("part-compact-") for n in new)
        assert len(gone) == 1
    for path in history.rglob("part-*.parquet"):
        pq.ParquetFile(path).read()  # every visible file is whole
    assert view_contents(history) == before

    compact(history, grace_s=0)  # the next run finishes the job
    assert view_contents(history) == before
    assert not list(history.rglob(".compact-*"))
    assert len(parts(history, "telemetry", DAY - dt.timedelta(days=1))) == 1


def test_a_partition_that_cannot_be_merged_is_left_as_it_was_and_the_others_are(
    history: Path,
) -> None:
    day_dir = history / "acks" / f"date={DAY.isoformat()}"
    pq.write_table(pa.table({"site": ["s1"], "surprise": [1]}), day_dir / "part-future.parquet")
    files = parts(history, "acks", DAY)
    done = subprocess.run(
        [sys.executable, "-m", "gridflex.cli", "history", "compact",
         "--data-dir", str(history), "--grace-s", "0"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"not compacted (see the log): {day_dir}" in done.stderr
    assert "['surprise'] are not in the acks schema" in done.stderr
    assert parts(history, "acks", DAY) == files
    assert len(parts(history, "telemetry", DAY)) == 1
    assert not list(history.rglob(".compact-*"))


def test_one_upkeep_at_a_time(history: Path) -> None:
    with _upkeep_lock(history):
        with pytest.raises(UpkeepBusy):
            compact(history, grace_s=0)
        with pytest.raises(UpkeepBusy):
            prune(history, {"telemetry": 1})
        done = subprocess.run(
            [sys.executable, "-m", "gridflex.cli", "history", "compact",
             "--data-dir", str(history)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
            text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 3
    assert "another compaction or prune is running" in done.stderr


# --------------------------------------------------------------------------- retention


def test_prune_removes_the_days_older_than_each_streams_retention(history: Path) -> None:
    # On 2026-11-27 with 2 days kept: 11-25 and later stay, 11-24 goes.
    today = dt.date(2026, 11, 27)
    before = {p.name for p in (history / "acks").glob("date=*")}
    removed = prune(history, {"telemetry": 2, "grid_frequency": 1}, today=today)
    assert sorted(p.relative_to(history).as_posix() for p in removed) == [
        "grid_frequency/date=2026-11-25",  # 1 day kept: from 11-26 on
        "telemetry/date=2026-11-24",
    ]
    kept = sorted(p.name for p in (history / "telemetry").glob("date=*"))
    assert kept[0] == "date=2026-11-25"
    assert {p.name for p in (history / "acks").glob("date=*")} == before  # not named: kept
    assert not list(history.rglob(".pruned-*"))
    con = connect(history)
    assert con.execute("select count(*) from grid_frequency").fetchall() == [(0,)]
    assert con.execute("select count(*) from telemetry where date < '2026-11-25'").fetchall() == [
        (0,)
    ]


def test_prune_finishes_what_an_interrupted_prune_left(history: Path) -> None:
    hidden = history / "telemetry" / ".pruned-date=2026-01-01-0000"
    hidden.mkdir()
    (hidden / "part-x.parquet").write_bytes(b"half")
    prune(history, {"telemetry": 3650}, today=dt.date(2026, 11, 30))
    assert not hidden.exists()
    assert parts(history, "telemetry", DAY)  # within retention


def test_prune_cli_takes_the_retention_from_the_site_file(history: Path, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        f'[site]\nid = "s1"\n\n[history]\ndir = "{history}"\n\n'
        "[history.retention_days]\nforecasts = 1\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "gridflex.cli", "history", "prune", "--site", str(site),
         "--today", "2026-11-30"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"removed {history / 'forecasts' / 'date=2026-11-25'}"]
    assert parts(history, "telemetry", DAY)


def test_prune_cli_without_any_retention_is_a_usage_error(history: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gridflex.cli", "history", "prune", "--data-dir", str(history)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no retention" in done.stderr


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("stream", STREAMS)
def test_every_file_the_writer_makes_names_its_stream_and_schema_version(
    tmp_path: Path, stream: str
) -> None:
    schema = SCHEMAS[stream]
    row = {f.name: None for f in schema}
    for f in schema:
        if not f.nullable:
            row[f.name] = {pa.string(): "x", pa.int64(): BOUNDARY_MS, pa.float64(): 1.0,
                           pa.bool_(): True, pa.list_(pa.string()): []}[f.type]  # fmt: skip
    ts = "window_start_ms" if stream == "grid_frequency" else "ts_ms"
    writer = ParquetStreamWriter(tmp_path, stream, ts_column=ts, name="w")
    writer.add([row])
    (path,) = writer.flush()
    meta = pq.read_metadata(path).metadata
    assert {k: meta[k.encode()].decode() for k in file_metadata(stream)} == file_metadata(stream)
    con = connect(tmp_path)
    assert con.execute(f"select count(*) from {stream}").fetchall() == [(1,)]


def test_views_read_files_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "acks" / "date=2026-11-25" / "part-old.parquet"
    make_history(tmp_path)
    src = next((tmp_path / "telemetry").rglob("part-*.parquet"))
    table = pq.read_table(src).replace_schema_metadata(None)
    table = table.drop_columns(["date"]) if "date" in table.schema.names else table
    shutil.rmtree(tmp_path / "telemetry")
    write_parquet_atomic(table, src)
    assert b"gridflex.stream" not in (pq.read_metadata(src).metadata or {})
    assert not path.exists()
    con = connect(tmp_path)
    assert con.execute("select count(*) from telemetry").fetchall() == [(table.num_rows,)]


def _telemetry_keys(root: Path) -> list[tuple[Any, ...]]:
    con = connect(root)
    try:
        return con.execute(
            "select asset, boot, seq, register_decreased from telemetry order by all"
        ).fetchall()
    finally:
        con.close()


def test_compacted_telemetry_holds_each_reading_once_even_when_copies_differ(
    tmp_path: Path,
) -> None:
    # A replay after a restart can flag a copy differently (the register check's memory
    # was lost): the view takes the flag if any copy has it, and so must the merged file.
    ts = BOUNDARY_MS - DAY_MS
    writer = ParquetStreamWriter(tmp_path, "telemetry", ts_column="ts_ms", name="t")
    for flagged in (False, True, False):
        writer.add([telemetry_row(_reading("cs-1", ts, 7, 5.0), register_decreased=flagged)])
        writer.flush()
    before = _telemetry_keys(tmp_path)
    assert before == [("cs-1", "b1", 7, True)]

    compact(tmp_path, grace_s=0)

    [merged] = parts(tmp_path, "telemetry", utc_date(ts))
    assert pq.read_table(merged).num_rows == 1
    assert _telemetry_keys(tmp_path) == before


def test_a_late_copy_beside_a_compacted_file_is_still_read_once(tmp_path: Path) -> None:
    # The compacted file alone is read without de-duplication; a file arriving in the
    # same day afterwards (a redelivery) must bring the window back for that day.
    ts = BOUNDARY_MS - DAY_MS
    writer = ParquetStreamWriter(tmp_path, "telemetry", ts_column="ts_ms", name="t")
    readings = [_reading("cs-1", ts + i * 1000, i, 5.0 + i) for i in range(3)]
    writer.add([telemetry_row(r) for r in readings])
    writer.flush()
    writer.add([telemetry_row(readings[0])])
    writer.flush()
    compact(tmp_path, grace_s=0)
    once = _telemetry_keys(tmp_path)
    assert len(once) == 3

    late = ParquetStreamWriter(tmp_path, "telemetry", ts_column="ts_ms", name="late")
    late.add([telemetry_row(readings[1])])
    late.flush()

    assert len(parts(tmp_path, "telemetry", utc_date(ts))) == 2
    assert _telemetry_keys(tmp_path) == once
