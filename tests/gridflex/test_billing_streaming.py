"""The streaming path of ``billing_segments`` gives the general window's answer, row for row.

Compacted partitions recorded as sorted (``gridflex.sorted_by``) are paired in a streaming
pass (no sort); every other partition, and the first reading of each asset in each sorted
file, goes through the general window. The property: on small random histories (register
resets, NULL registers, gaps, duplicate deliveries, sessions, readings on interval and
midnight boundaries, several days and files) in the layouts a history goes through
(as written, compacted, compacted with late files and uncompacted days), the segments and
settlements equal those of ``register(con, streams=0)``, which sends every reading through
the general window.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridflex.billing.views import register
from gridflex.contract import Telemetry
from gridflex.history import META_SORTED_BY, TELEMETRY_SCHEMA, connect
from gridflex.history_store import compact
from pipelines.history_sink import ParquetStreamWriter, telemetry_row

#: 2025-03-30T00:00:00Z: the first day of the generated histories (closed, so compactable).
DAY0_MS = 1_743_292_800_000
DAY0 = dt.date(2025, 3, 30)
DAY_MS = 86_400_000
MIN15 = 900_000
#: Offsets into a day the readings favour: midnight, interval boundaries and their
#: neighbours, the last millisecond of the day.
SPECIAL = (0, 1, MIN15 - 1, MIN15, MIN15 + 1, 2 * MIN15, DAY_MS - MIN15, DAY_MS - 1)

REGISTER_MODES = ("always", "never", "sometimes")


@st.composite
def histories(draw: st.DrawFn) -> dict[str, Any]:
    """Readings of a few assets over a few days, and how they are written to files."""
    days = draw(st.integers(1, 3))
    offset = st.one_of(
        st.sampled_from(SPECIAL), st.integers(0, DAY_MS - 1), st.integers(0, 3 * MIN15)
    )
    assets = []
    for site, asset in draw(
        st.lists(
            st.tuples(st.sampled_from(("s1", "s2")), st.sampled_from(("a0", "a1", "a2"))),
            min_size=1,
            max_size=3,
            unique=True,
        )
    ):
        modes = (draw(st.sampled_from(REGISTER_MODES)), draw(st.sampled_from(REGISTER_MODES)))
        times = sorted(
            draw(st.integers(0, days - 1)) * DAY_MS + draw(offset)
            for _ in range(draw(st.integers(0, 10)))
        )
        imp, exp, seq, boots = 0.0, 0.0, 0, 1
        readings = []
        for ts in times:
            event = draw(st.sampled_from(("step", "step", "step", "reboot", "restart", "drop")))
            if event in ("reboot", "restart"):
                boots += 1
                seq = 0  # a new boot's sequence numbers start again
                if event == "reboot":  # a meter that starts from zero
                    imp, exp = 0.0, 0.0
            elif event == "drop":  # a register lower than before without a new boot
                imp = max(imp - draw(st.integers(1, 50)), 0.0)
            imp += draw(st.integers(0, 30))
            exp += draw(st.integers(0, 30))
            seq += 1
            values = []
            for mode, value in zip(modes, (imp, exp), strict=True):
                missing = mode == "never" or (mode == "sometimes" and draw(st.booleans()))
                values.append(None if missing else value)
            readings.append(
                Telemetry(
                    site=site,
                    asset=asset,
                    kind="inverter",
                    ts_ms=DAY0_MS + ts,
                    seq=seq,
                    boot=f"b{boots}",
                    power_w=float(draw(st.integers(-5000, 5000))),
                    energy_import_wh=values[0],
                    energy_export_wh=values[1],
                    transaction_id=draw(st.sampled_from((None, "tx1", "tx2"))),
                )
            )
        assets.append(readings)
    readings = [r for asset in assets for r in asset]
    flushes = [draw(st.integers(0, 2)) for _ in readings]
    copies = [draw(st.sampled_from((0, 0, 0, 1))) for _ in readings]  # redeliveries
    late_day = draw(st.integers(0, days - 1))
    return {
        "readings": readings, "flushes": flushes, "copies": copies, "days": days,
        "late_day": late_day,
    }  # fmt: skip


def write(root: Path, history: dict[str, Any], *, name: str = "f") -> None:
    """Write the readings with the pipeline's writer: one file per flush and day."""
    flushes: dict[int, list[Telemetry]] = {}
    for reading, flush, copies in zip(
        history["readings"], history["flushes"], history["copies"], strict=True
    ):
        flushes.setdefault(flush, []).append(reading)
        for i in range(copies):  # a copy in a later flush, as a redelivery lands
            flushes.setdefault(3 + i, []).append(reading)
    for flush, readings in sorted(flushes.items()):
        writer = ParquetStreamWriter(root, "telemetry", ts_column="ts_ms", name=f"{name}{flush}")
        writer.add([telemetry_row(r) for r in readings])
        writer.flush()


def lay_out(root: Path, history: dict[str, Any], layout: str) -> None:
    """Write ``history`` under ``root`` in ``layout``."""
    write(root, history)
    if layout == "sink":
        return
    compact(root, before=DAY0 + dt.timedelta(days=history["days"]), grace_s=0)
    if layout == "mixed":
        # A late redelivery of a day's first reading lands in a compacted partition (two
        # files: not sorted any more), and the last day is written again uncompacted (a
        # second file there too, or a file of its own).
        readings = history["readings"]
        start = DAY0_MS + history["late_day"] * DAY_MS
        late = [r for r in readings if start <= r.ts_ms < start + DAY_MS][:1]
        last = [r for r in readings if r.ts_ms >= DAY0_MS + (history["days"] - 1) * DAY_MS]
        for name, rows in (("late", late), ("last", last)):
            if rows:
                writer = ParquetStreamWriter(root, "telemetry", ts_column="ts_ms", name=name)
                writer.add([telemetry_row(r) for r in rows])
                writer.flush()


def answers(root: Path, streams: int) -> tuple[list[Any], list[Any], list[Any]]:
    """Segments, settlements and sessions of the history at ``root``."""
    con = connect(root)
    try:
        register(con, streams=streams)
        return tuple(  # type: ignore[return-value]
            con.execute(f"select * from {view} order by all").fetchall()
            for view in ("billing_segments", "settlements", "sessions")
        )
    finally:
        con.close()


def same_rows(got: list[Any], want: list[Any]) -> bool:
    """Equal rows, floats equal but for the order a sum adds them in."""
    if len(got) != len(want):
        return False
    for a, b in zip(got, want, strict=True):
        for x, y in zip(a, b, strict=True):
            if isinstance(x, float) and isinstance(y, float):
                if not math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-9):
                    return False
            elif x != y:
                return False
    return True


def check(history: dict[str, Any], layout: str, streams: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "h"
        root.mkdir()
        lay_out(root, history, layout)
        segments, settlements, sessions = answers(root, streams)
        want_segments, want_settlements, want_sessions = answers(root, 0)
        assert segments == want_segments  # each segment is computed alike: exactly equal
        assert same_rows(settlements, want_settlements), (settlements, want_settlements)
        assert same_rows(sessions, want_sessions), (sessions, want_sessions)


_SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(histories())
def test_streaming_segments_equal_the_general_window_on_a_compacted_history(
    history: dict[str, Any],
) -> None:
    check(history, "compacted", 2)


@_SETTINGS
@given(histories(), st.integers(1, 3))
def test_streaming_segments_equal_the_general_window_with_late_files_and_open_days(
    history: dict[str, Any], streams: int
) -> None:
    check(history, "mixed", streams)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_streaming_segments_equal_the_general_window_on_the_files_as_written(
    history: dict[str, Any],
) -> None:
    check(history, "sink", 2)


def _two_days(root: Path, *, late: bool = False) -> None:
    readings = [
        Telemetry(
            site="s1",
            asset=asset,
            kind="inverter",
            ts_ms=DAY0_MS + day * DAY_MS + i * 1000,
            seq=day * 10 + i,
            boot="b1",
            power_w=1000.0,
            energy_import_wh=float(day * 10 + i),
            energy_export_wh=None,
        )
        for asset in ("a0", "a1")
        for day in (0, 1)
        for i in range(3)
    ]
    write(root, {"readings": readings, "flushes": [i % 2 for i in range(12)],
                 "copies": [0] * 12})  # fmt: skip
    compact(root, before=DAY0 + dt.timedelta(days=2), grace_s=0)
    if late:  # a late copy lands in the first day: two files there
        write(root, {"readings": readings[:1], "flushes": [0], "copies": [0]}, name="late")


def sorted_days(root: Path) -> list[Any]:
    con = connect(root)
    try:
        rows = con.execute("select date from telemetry_sorted_partitions order by 1").fetchall()
        return [r[0] for r in rows]
    finally:
        con.close()


def test_compaction_records_the_window_order_and_the_day_becomes_streamable(
    tmp_path: Path,
) -> None:
    _two_days(tmp_path)
    files = sorted(tmp_path.glob("telemetry/date=*/part-*.parquet"))
    assert len(files) == 2
    for path in files:
        meta = pq.read_schema(path).metadata
        assert meta[META_SORTED_BY.encode()] == b"site,asset,ts_ms,boot,seq"
        table = pq.read_table(path)
        keys = list(
            zip(
                *(table[c].to_pylist() for c in ("site", "asset", "ts_ms", "boot", "seq")),
                strict=True,
            )
        )
        assert keys == sorted(keys)
    assert sorted_days(tmp_path) == [DAY0, DAY0 + dt.timedelta(days=1)]


def test_a_partition_with_a_late_file_is_no_longer_streamed(tmp_path: Path) -> None:
    _two_days(tmp_path, late=True)
    assert sorted_days(tmp_path) == [DAY0 + dt.timedelta(days=1)]


def test_a_compacted_file_without_the_recorded_order_is_not_streamed(tmp_path: Path) -> None:
    _two_days(tmp_path)
    for path in tmp_path.glob("telemetry/date=*/part-*.parquet"):
        table = pq.read_table(path)
        meta = dict(table.schema.metadata)
        del meta[META_SORTED_BY.encode()]  # as compaction wrote it before it recorded one
        pq.write_table(table.replace_schema_metadata(meta), path)
    assert sorted_days(tmp_path) == []


def test_a_streamed_day_pairs_its_first_reading_with_the_unstreamed_day_before(
    tmp_path: Path,
) -> None:
    # One asset over three days; days 0 and 2 compacted and sorted, day 1 one file as the
    # pipeline wrote it (compaction leaves a single file alone). In the compacted files
    # day 2 follows day 0 directly, but the first reading of day 2 pairs with day 1's
    # last: the general window decides it.
    readings = [
        Telemetry(
            site="s1",
            asset="a0",
            kind="inverter",
            ts_ms=DAY0_MS + day * DAY_MS + i * 1000,
            seq=day * 10 + i,
            boot="b1",
            power_w=1000.0,
            energy_import_wh=float(100 * day + i),
            energy_export_wh=0.0,
        )
        for day in (0, 1, 2)
        for i in range(3)
    ]
    flushes = [0 if r.ts_ms // DAY_MS == (DAY0_MS + DAY_MS) // DAY_MS else i % 2
               for i, r in enumerate(readings)]  # fmt: skip
    write(tmp_path, {"readings": readings, "flushes": flushes, "copies": [0] * 9})
    compact(tmp_path, before=DAY0 + dt.timedelta(days=3), grace_s=0)
    assert sorted_days(tmp_path) == [DAY0, DAY0 + dt.timedelta(days=2)]
    segments, settlements, sessions = answers(tmp_path, 2)
    assert (segments, settlements, sessions) == answers(tmp_path, 0)
    con = connect(tmp_path)
    try:
        first_of_day_2 = con.execute(
            "select start_ms, energy_import_wh from billing_segments where end_ms = ?",
            [DAY0_MS + 2 * DAY_MS],
        ).fetchall()
    finally:
        con.close()
    assert first_of_day_2 == [(DAY0_MS + DAY_MS + 2000, 98.0)]  # 200 - 102, from day 1


def test_the_sorted_days_are_read_in_a_streaming_pass_not_sorted(tmp_path: Path) -> None:
    # The streaming path relies on DuckDB evaluating `lag(...) OVER ()` in file order
    # (its streaming window, which nothing but scans and filters may precede).
    _two_days(tmp_path)
    con = connect(tmp_path)
    try:
        plan = con.execute("explain select * from settlements").fetchall()[0][1]
    finally:
        con.close()
    assert "Streaming Window" in plan


def test_streaming_equals_the_general_window_over_many_row_groups_and_files(
    tmp_path: Path,
) -> None:
    # 5 assets x 2 days x 27,000 readings: several row groups per compacted file (the
    # compaction writes 131,072 rows a group) and several DuckDB vectors per run.
    per_day = 27_000
    rows = []
    for day in range(2):
        for j in range(5):
            for i in range(per_day):
                seq = day * per_day + i
                rows.append(
                    dict.fromkeys(TELEMETRY_SCHEMA.names)
                    | {
                        "site": "s1", "asset": f"a{j}", "kind": "inverter",
                        "ts_ms": DAY0_MS + day * DAY_MS + i * 2_000 + j, "seq": seq,
                        "boot": "b1" if seq < 45_000 else "b2", "power_w": float(i % 7),
                        # a reset at the reboot; asset a4 without an export register
                        "energy_import_wh": float(seq if seq < 45_000 else seq - 45_000),
                        "energy_export_wh": None if j == 4 else float(seq // 3),
                        "transaction_id": "tx" if 10_000 <= i < 20_000 else None,
                    }
                )  # fmt: skip
    for half in range(2):  # two files per day, rows interleaved: compaction sorts them
        part = [r for k, r in enumerate(rows) if k % 2 == half]
        writer = ParquetStreamWriter(tmp_path, "telemetry", ts_column="ts_ms", name=f"w{half}")
        writer.add(part)
        writer.flush()
    compact(tmp_path, before=DAY0 + dt.timedelta(days=2), grace_s=0)
    assert len(sorted_days(tmp_path)) == 2
    con = connect(tmp_path)
    try:
        register(con, streams=2)
        con.execute("create table streamed as select * from billing_segments")
        con.execute("create table streamed_settlements as select * from settlements")
        register(con, streams=0)
        differ = con.execute(
            "select count(*) from (select * from streamed except all select * from billing_segments"
            " union all (select * from billing_segments except all select * from streamed))"
        ).fetchone()
        segments = con.execute("select count(*) from streamed").fetchone()
        settlements = con.execute("select * from streamed_settlements order by all").fetchall()
        want = con.execute("select * from settlements order by all").fetchall()
    finally:
        con.close()
    assert segments == (2 * 5 * per_day - 5,)
    assert differ == (0,)
    assert same_rows(settlements, want)
