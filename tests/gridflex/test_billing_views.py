"""Golden tests of the billing views on hand-built telemetry written by the real Parquet writer.

Every expected number is worked out by hand in the test, from the readings it writes:
the registers grow by a known number of Wh per second, so the energy of any stretch of
time is that rate times its length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gridflex.billing.views import register
from gridflex.contract import ChargingSession, DispatchCommand, Telemetry
from gridflex.contract.session import hash_id_token
from gridflex.history import connect, refresh_views
from pipelines.history_events import session_row
from pipelines.history_sink import ParquetStreamWriter, command_row, telemetry_row

#: A 15-minute boundary, 2026-11-25T12:00:00Z, in epoch ms.
B = 1_795_608_000_000
#: Midnight, 2026-11-26T00:00:00Z.
MIDNIGHT = 1_795_651_200_000
MIN15 = 900_000
S = 1000  # one second, ms


def reading(asset: str, ts_ms: int, seq: int, imp: float, **extra: Any) -> Telemetry:
    """An inverter reading; ``imp`` is the import register, Wh."""
    fields: dict[str, Any] = {
        "site": "s1", "asset": asset, "kind": "inverter", "ts_ms": ts_ms, "seq": seq,
        "boot": "b1", "power_w": 3600.0, "energy_import_wh": imp, "energy_export_wh": 0.0,
    }  # fmt: skip
    fields.update(extra)
    return Telemetry(**fields)


def write(data_dir: Path, readings: list[Telemetry], *, copies: int = 1) -> None:
    """Write the readings with the pipeline's writer, ``copies`` times in separate files."""
    writer = ParquetStreamWriter(data_dir, "telemetry", ts_column="ts_ms", name="t")
    for _ in range(copies):
        writer.add([telemetry_row(r) for r in readings])
        writer.flush()


def settlements(data_dir: Path, asset: str, **billing: Any) -> list[tuple[Any, ...]]:
    con = connect(data_dir, **billing)
    try:
        return con.execute(
            "select session_id, interval_start_ms, interval_end_ms, energy_import_wh,"
            " energy_export_wh, quality from settlements where asset = ?"
            " order by interval_start_ms, session_id nulls first",
            [asset],
        ).fetchall()
    finally:
        con.close()


def test_a_reading_on_a_boundary_closes_the_interval_before_it(tmp_path: Path) -> None:
    write(tmp_path, [
        reading("inv-a", B - 20 * S, 1, 100.0),
        reading("inv-a", B - 10 * S, 2, 110.0),
        reading("inv-a", B, 3, 120.0),          # exactly on 12:00:00
        reading("inv-a", B + 10 * S, 4, 135.0),
    ])  # fmt: skip
    assert settlements(tmp_path, "inv-a") == [
        (None, B - MIN15, B, 20.0, 0.0, "ok"),  # 100 -> 120
        (None, B, B + MIN15, 15.0, 0.0, "ok"),  # 120 -> 135
    ]


def test_a_segment_across_a_boundary_is_apportioned_linearly(tmp_path: Path) -> None:
    # 10 Wh over 10 s, 4 s of them before 12:00 and 6 s after.
    write(tmp_path, [reading("inv-a", B - 4 * S, 1, 200.0), reading("inv-a", B + 6 * S, 2, 210.0)])
    rows = settlements(tmp_path, "inv-a")
    assert [(r[1], r[5]) for r in rows] == [(B - MIN15, "ok"), (B, "ok")]
    assert [r[3] for r in rows] == pytest.approx([4.0, 6.0])


def test_a_session_across_intervals_and_midnight(tmp_path: Path) -> None:
    # A car charges 2 Wh/s (7200 W) from 23:44:30 to 00:15:30, one reading a minute, SoC
    # 40 % + 1 % a minute; idle readings 1 min before and after, without a transaction.
    start = MIDNIGHT - 930 * S
    charging = [
        reading("evse-1", start + i * 60 * S, 10 + i, 1000.0 + 120.0 * i, kind="evse",
                power_w=7200.0, transaction_id="tx-1", soc_pct=40.0 + i)
        for i in range(32)
    ]  # fmt: skip
    idle_before = reading("evse-1", start - 60 * S, 9, 1000.0, kind="evse", power_w=0.0)
    idle_after = reading("evse-1", start + 32 * 60 * S, 42, 4720.0, kind="evse", power_w=0.0)
    write(tmp_path, [idle_before, *charging, idle_after], copies=2)  # every reading twice

    rows = settlements(tmp_path, "evse-1")
    # 31 minutes of charging, 3720 Wh: 30 s before 23:45 (60 Wh), 23:45-00:00 (1800 Wh),
    # 00:00-00:15 (1800 Wh), 30 s after 00:15 (60 Wh); the idle minute after it is 0 Wh.
    expected = [
        ("tx-1", MIDNIGHT - 2 * MIN15, 60.0),  # with the idle minute before: 0 Wh
        ("tx-1", MIDNIGHT - MIN15, 1800.0),
        ("tx-1", MIDNIGHT, 1800.0),
        (None, MIDNIGHT + MIN15, 0.0),
        ("tx-1", MIDNIGHT + MIN15, 60.0),
    ]
    assert [(r[0], r[1]) for r in rows] == [(e[0], e[1]) for e in expected]
    assert [r[3] for r in rows] == pytest.approx([e[2] for e in expected])
    assert {r[5] for r in rows} == {"ok"}

    con = connect(tmp_path)
    session = con.execute(
        "select session_id, start_ms, end_ms, energy_import_wh, energy_export_wh,"
        " soc_start_pct, soc_end_pct, readings, id_token_hash, quality from sessions"
    ).fetchall()
    assert session == [
        ("tx-1", start, start + 31 * 60 * S, pytest.approx(3720.0), 0.0, 40.0, 71.0, 32,
         None, "ok"),
    ]  # fmt: skip


def test_a_session_takes_start_end_and_token_hash_from_the_csms_record(tmp_path: Path) -> None:
    # Readings 10:00:30-10:02:30 of tx-9; the CSMS recorded the transaction 10:00:10-10:03:00.
    readings = [
        reading("evse-1", B + (30 + 60 * i) * S, i, 500.0 + 100.0 * i, kind="evse",
                power_w=6000.0, transaction_id="tx-9", soc_pct=50.0 + i)
        for i in range(3)
    ]  # fmt: skip
    write(tmp_path, readings)
    token = hash_id_token("04A2B3C4", "ISO14443")
    events = ParquetStreamWriter(tmp_path, "transactions", ts_column="ts_ms", name="s")
    for event, end_ms in (("started", None), ("ended", B + 180 * S)):
        events.add([session_row(ChargingSession(
            site="s1", asset="evse-1", ts_ms=end_ms or B + 10 * S, event=event,
            transaction_id="tx-9", start_ms=B + 10 * S, end_ms=end_ms, id_token_hash=token,
        ))])  # fmt: skip
    events.flush()

    session = (
        connect(tmp_path)
        .execute(
            "select start_ms, end_ms, energy_import_wh, soc_start_pct, soc_end_pct, id_token_hash"
            " from sessions"
        )
        .fetchall()
    )
    assert session == [(B + 10 * S, B + 180 * S, pytest.approx(200.0), 50.0, 52.0, token)]


def test_duplicate_deliveries_count_once(tmp_path: Path) -> None:
    readings = [reading("inv-a", B + i * 10 * S, i, 10.0 * i) for i in range(4)]
    write(tmp_path / "once", readings)
    write(tmp_path / "thrice", readings, copies=3)
    assert settlements(tmp_path / "thrice", "inv-a") == settlements(tmp_path / "once", "inv-a")
    assert settlements(tmp_path / "thrice", "inv-a") == [(None, B, B + MIN15, 30.0, 0.0, "ok")]
    # Copies would add zero-length segments of 0 Wh, invisible in the sums: count them.
    con = connect(tmp_path / "thrice")
    assert con.execute("select count(*) from billing_segments").fetchone() == (3,)


def test_a_register_reset_counts_nothing_for_the_unknown_stretch(tmp_path: Path) -> None:
    write(tmp_path, [
        reading("inv-a", B + 0 * S, 1, 500.0),
        reading("inv-a", B + 10 * S, 2, 510.0),
        reading("inv-a", B + 20 * S, 3, 520.0),
        # the device rebooted: new boot, seq from 0, register from 0
        reading("inv-a", B + 30 * S, 0, 0.0, boot="b2"),
        reading("inv-a", B + 40 * S, 1, 10.0, boot="b2"),
        reading("inv-a", B + 50 * S, 2, 20.0, boot="b2"),
    ])  # fmt: skip
    # 20 Wh in boot b1, nothing for 520 -> 0, 20 Wh in boot b2.
    assert settlements(tmp_path, "inv-a") == [(None, B, B + MIN15, 40.0, 0.0, "reset")]


def test_a_new_boot_whose_register_goes_on_is_an_ordinary_segment(tmp_path: Path) -> None:
    write(tmp_path, [
        reading("inv-a", B + 0 * S, 7, 500.0),
        reading("inv-a", B + 10 * S, 0, 510.0, boot="b2"),  # collector restart, meter kept on
    ])  # fmt: skip
    assert settlements(tmp_path, "inv-a") == [(None, B, B + MIN15, 10.0, 0.0, "ok")]


def test_gaps_are_flagged_and_their_register_energy_apportioned(tmp_path: Path) -> None:
    write(tmp_path, [
        reading("inv-a", B - 100 * S, 1, 0.0),
        reading("inv-a", B + 200 * S, 2, 300.0),  # 300 s without a reading (> 60 s)
        reading("inv-a", B + 210 * S, 3, 310.0),
        reading("inv-a", B + MIN15 + 10 * S, 4, 1010.0),  # 700 s more, the next interval
    ])  # fmt: skip
    rows = settlements(tmp_path, "inv-a")
    # 1 Wh/s throughout: 100 s before 12:00, 200 + 10 + 690 s in 12:00-12:15, 10 s after.
    assert [(r[1], r[5]) for r in rows] == [(B - MIN15, "gap"), (B, "gap"), (B + MIN15, "gap")]
    assert [r[3] for r in rows] == pytest.approx([100.0, 900.0, 10.0])


def test_a_pause_of_exactly_max_gap_s_is_no_gap(tmp_path: Path) -> None:
    write(tmp_path, [reading("inv-a", B, 1, 0.0), reading("inv-a", B + 60 * S, 2, 60.0)])
    assert settlements(tmp_path, "inv-a", max_gap_s=60.0) == [(None, B, B + MIN15, 60.0, 0.0, "ok")]
    assert settlements(tmp_path, "inv-a", max_gap_s=59.0) == [
        (None, B, B + MIN15, 60.0, 0.0, "gap")
    ]


def test_exports_and_a_shorter_interval(tmp_path: Path) -> None:
    # -1800 W: 0.5 Wh/s exported, readings every 30 s from 12:00 for 3 minutes.
    write(tmp_path, [
        reading("inv-a", B + i * 30 * S, i, 0.0, power_w=-1800.0, energy_export_wh=15.0 * i)
        for i in range(7)
    ])  # fmt: skip
    rows = settlements(tmp_path, "inv-a", interval_min=1)
    assert [(r[1], r[3], r[4]) for r in rows] == [
        (B, 0.0, 30.0), (B + 60 * S, 0.0, 30.0), (B + 120 * S, 0.0, 30.0)
    ]  # fmt: skip


def test_reconciliation_flags_more_than_one_percent(tmp_path: Path) -> None:
    # 3600 W is 10 Wh per 10 s. inv-ok: registers +10.04 Wh (0.4 % off);
    # inv-off: +10.2 Wh (2 % off: 20 segments, 4 Wh more than integrated power).
    readings = []
    for i in range(21):
        readings.append(reading("inv-ok", B + i * 10 * S, i, 10.04 * i))
        readings.append(reading("inv-off", B + i * 10 * S, i, 10.2 * i))
    write(tmp_path, readings)
    con = connect(tmp_path)
    rows = con.execute(
        "select asset, register_net_wh, integrated_net_wh, difference_wh, flagged"
        " from reconciliation order by asset"
    ).fetchall()
    assert [(r[0], r[4]) for r in rows] == [("inv-off", True), ("inv-ok", False)]
    assert [r[1] for r in rows] == pytest.approx([204.0, 200.8])
    assert [r[2] for r in rows] == pytest.approx([200.0, 200.0])
    assert [r[3] for r in rows] == pytest.approx([-4.0, -0.8])


def test_response_energy_integrates_power_minus_base_while_a_command_holds(
    tmp_path: Path,
) -> None:
    powers = {-10: 0.0, 0: 0.0, 10: -2000.0, 20: -2000.0, 30: -2000.0}
    write(tmp_path, [
        reading("inv-a", B + t * S, i, 0.0, power_w=p) for i, (t, p) in enumerate(powers.items())
    ])  # fmt: skip
    commands = ParquetStreamWriter(tmp_path, "commands", ts_column="ts_ms", name="c")
    for command_id, issued_s, valid_s in (("c1", 5, 30), ("c2", 20, 35)):
        commands.add([command_row(DispatchCommand(
            site="s1", asset="inv-a", ts_ms=B + issued_s * S, seq=1, boot="b1",
            command_id=command_id, issued_ms=B + issued_s * S, setpoint_w=-2000.0,
            base_setpoint_w=0.0, valid_until_ms=B + valid_s * S, mode="droop", reason="uf",
        ))])  # fmt: skip
    commands.flush()
    con = connect(tmp_path)
    rows = con.execute(
        "select command_id, start_ms, end_ms, requested_wh, delivered_wh, covered_ms, quality"
        " from response_energy order by command_id"
    ).fetchall()
    # c1 holds 12:00:05-12:00:20 (c2 follows): power -1000 W at :05 falling to -2000 at :10
    # (5 s at -1500 mean) then -2000 W for 10 s: -27500 W s. Asked: -2000 W for 15 s.
    # c2 holds :20-:35; readings end at :30: 10 s at -2000 W seen, 5 s not (a gap).
    assert [r[:3] for r in rows] == [("c1", B + 5 * S, B + 20 * S), ("c2", B + 20 * S, B + 35 * S)]
    assert [r[3] for r in rows] == pytest.approx([-30000 / 3600, -30000 / 3600])
    assert [r[4] for r in rows] == pytest.approx([-27500 / 3600, -20000 / 3600])
    assert [(r[5], r[6]) for r in rows] == [(15 * S, "ok"), (10 * S, "gap")]


def test_response_energy_counts_a_command_across_a_minute_once(tmp_path: Path) -> None:
    # -1000 W steady from 12:00:40 to 12:01:30; one command from :45 to 12:01:25, across
    # the minute: 40 s at -1000 W against a base of 0 W.
    times_s = range(40, 91, 10)
    write(
        tmp_path,
        [reading("inv-a", B + t * S, i, 0.0, power_w=-1000.0) for i, t in enumerate(times_s)],
    )
    commands = ParquetStreamWriter(tmp_path, "commands", ts_column="ts_ms", name="c")
    commands.add([command_row(DispatchCommand(
        site="s1", asset="inv-a", ts_ms=B + 45 * S, seq=1, boot="b1", command_id="c1",
        issued_ms=B + 45 * S, setpoint_w=-1000.0, base_setpoint_w=0.0,
        valid_until_ms=B + 85 * S, mode="manual", reason="test",
    ))])  # fmt: skip
    commands.flush()
    con = connect(tmp_path)
    row = con.execute("select delivered_wh, covered_ms, quality from response_energy").fetchone()
    assert row is not None
    assert row[0] == pytest.approx(-40_000 / 3600)
    assert row[1:] == (40 * S, "ok")


def test_empty_history_has_empty_billing_views(tmp_path: Path) -> None:
    con = connect(tmp_path / "missing")
    for view in ("settlements", "sessions", "response_energy", "reconciliation"):
        assert con.execute(f"select count(*) from {view}").fetchone() == (0,)


@pytest.mark.parametrize(("interval_min", "max_gap_s"), [(7, 60.0), (0, 60.0), (15, 0.0)])
def test_register_refuses_bad_parameters(interval_min: int, max_gap_s: float) -> None:
    con = connect(Path("/nonexistent"))
    with pytest.raises(ValueError, match=r"interval_min|max_gap_s"):
        register(con, interval_min=interval_min, max_gap_s=max_gap_s)


def test_billing_views_see_files_written_after_connect_once_refreshed(tmp_path: Path) -> None:
    con = connect(tmp_path)
    assert con.execute("select count(*) from settlements").fetchone() == (0,)
    write(tmp_path, [reading("inv-a", B, 1, 0.0), reading("inv-a", B + 10 * S, 2, 10.0)])
    refresh_views(con, tmp_path)
    assert con.execute("select energy_import_wh from settlements").fetchall() == [(10.0,)]
