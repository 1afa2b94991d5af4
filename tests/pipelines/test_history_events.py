"""Status changes, sessions and fault events as history rows, and their views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gridflex.contract import AssetStatus, ChargingSession, EventReport
from gridflex.history import EVENTS_SCHEMA, connect, partition_dir, utc_date
from pipelines.history_events import event_row, session_row, status_change, status_row
from pipelines.history_sink import ParquetStreamWriter


def status(ts_ms: int, **fields: Any) -> AssetStatus:
    values: dict[str, Any] = {"online": True, "state": "online", **fields}
    return AssetStatus(site="s1", asset="a1", kind="evse", ts_ms=ts_ms, **values)


def test_a_status_is_a_change_only_when_state_faults_or_transaction_differ() -> None:
    last = None
    kept = []
    for s in [
        status(1, reason="boot"),
        status(2, reason="charging needs received"),  # same state: no change
        status(3, transaction_id="t1"),
        status(4, transaction_id="t1", faults=["GroundFault"], state="faulted"),
        status(5, transaction_id="t1", faults=["GroundFault"], state="faulted"),
        status(6, online=False, state="offline"),
    ]:
        last, row = status_change(last, s)
        if row is not None:
            kept.append(row["ts_ms"])
    assert kept == [1, 3, 4, 6]


def test_the_status_view_drops_repeats_a_pipeline_without_memory_wrote(tmp_path: Path) -> None:
    writer = ParquetStreamWriter(tmp_path, "status_changes", ts_column="ts_ms", name="w")
    rows = [status(1), status(2, state="faulted", faults=["F1"]), status(3, state="online")]
    writer.add([status_row(s) for s in rows])
    writer.flush()
    # A restart without the dataflow's memory: the retained status again, and an older one.
    writer.add([status_row(rows[2]), status_row(status(4, reason="restart"))])
    writer.flush()
    con = connect(tmp_path)
    got = con.execute("select ts_ms, state, faults from status_changes order by ts_ms").fetchall()
    assert got == [(1, "online", []), (2, "faulted", ["F1"]), (3, "online", [])]


def test_the_transactions_view_joins_start_and_end_and_shows_a_running_one(
    tmp_path: Path,
) -> None:
    def session(tx: str, event: str, **fields: Any) -> ChargingSession:
        return ChargingSession(
            site="s1", asset="a1", ts_ms=fields.pop("ts_ms", 10), event=event,  # type: ignore[arg-type]
            transaction_id=tx, start_ms=0, **fields,
        )  # fmt: skip

    writer = ParquetStreamWriter(tmp_path, "transactions", ts_column="ts_ms", name="w")
    writer.add(
        [
            session_row(session("t1", "started", meter_start_wh=100.0, soc_start_pct=20.0)),
            session_row(session("t1", "ended", ts_ms=900, end_ms=890, meter_start_wh=100.0,
                                meter_stop_wh=160.0, soc_start_pct=20.0, soc_end_pct=30.0)),
            session_row(session("t2", "started", ts_ms=950, meter_start_wh=160.0)),
        ]
    )  # fmt: skip
    writer.flush()
    con = connect(tmp_path)
    got = con.execute(
        "select transaction_id, end_ms, ended, energy_import_wh, soc_start_pct, soc_end_pct "
        "from transactions order by 1"
    ).fetchall()
    assert got == [("t1", 890, True, 60.0, 20.0, 30.0), ("t2", None, False, None, None, None)]


def test_two_changes_in_one_millisecond_both_stay(tmp_path: Path) -> None:
    writer = ParquetStreamWriter(tmp_path, "status_changes", ts_column="ts_ms", name="w")
    rows = [status(1), status(2, transaction_id="t1"), status(2, state="faulted", faults=["F"])]
    writer.add([status_row(s) for s in rows])
    writer.add([status_row(rows[1])])  # a copy
    writer.flush()
    con = connect(tmp_path)
    got = con.execute("select ts_ms, state, transaction_id from status_changes").fetchall()
    assert sorted(got, key=str) == sorted(
        [(1, "online", None), (2, "online", "t1"), (2, "faulted", None)], key=str
    )


def _event(event_id: str, ts_ms: int, **fields: Any) -> EventReport:
    values: dict[str, Any] = {"asset": "evse1", "event": "fault", "fault_code": "0x04", **fields}
    return EventReport(site="s1", component="collect-ocpp", ts_ms=ts_ms, event_id=event_id,
                       **values)  # fmt: skip


def test_the_events_view_keeps_one_row_per_event_id_and_reads_files_without_it(
    tmp_path: Path,
) -> None:
    """Copies of one event (a redelivery) are one row; two events in one ms are two."""
    writer = ParquetStreamWriter(tmp_path, "events", ts_column="ts_ms", name="p")
    writer.add([event_row(e) for e in (_event("e1", 1000), _event("e1", 1000), _event("e2", 1000))])
    writer.flush()
    # A file of schema version 1 (written by the detecting process, no event_id): twice
    old = [{"site": "s1", "asset": "inv1", "ts_ms": 2000, "component": "control",
            "event": "fault", "fault_code": "Grid_Sync_Error", "detail": "x"}]  # fmt: skip
    v1 = pa.schema([f for f in EVENTS_SCHEMA if f.name != "event_id"])
    for name in ("part-control-a.parquet", "part-control-b.parquet"):
        path = partition_dir(tmp_path, "events", utc_date(2000)) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(old, schema=v1), path)
    rows = (
        connect(tmp_path)
        .execute("select asset, component, fault_code, event_id from events order by all")
        .fetchall()
    )
    assert rows == [
        ("evse1", "collect-ocpp", "0x04", "e1"),
        ("evse1", "collect-ocpp", "0x04", "e2"),
        ("inv1", "control", "Grid_Sync_Error", None),
    ]
