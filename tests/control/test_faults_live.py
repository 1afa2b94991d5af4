"""Unit tests: fault detection and the latch, the writer's live state and limits, the mailbox."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from control.clamp import SiteHeadroom
from control.faults import LOST_DEVICE, FaultLatch, faults_in_status, faults_in_telemetry
from control.live import LiveReading, LiveState, limits_for, parse_reading
from control.mailbox import Job, Mailbox
from gridflex.config import parse_site
from gridflex.contract import AssetStatus, DispatchCommand, Telemetry


def _status(**fields: Any) -> AssetStatus:
    base: dict[str, Any] = {"site": "s", "asset": "a", "kind": "evse", "ts_ms": 1, "online": True}
    return AssetStatus(**(base | fields))


@pytest.mark.parametrize(
    ("fields", "codes"),
    [
        ({"state": "online"}, []),
        ({"state": "faulted", "faults": ["Error 0x04"]}, ["Error 0x04"]),
        ({"state": "faulted"}, ["faulted"]),
        (
            {"state": "online", "faults": ["Grid_Sync_Error", "Grid_Sync_Error"]},
            ["Grid_Sync_Error"],
        ),
        # silent (nothing came back) that often in a row: lost
        ({"state": "offline", "online": False, "consecutive_failures": 2}, []),
        ({"state": "offline", "online": False, "consecutive_failures": 3}, [LOST_DEVICE]),
        # the collector stopped: no failure of the device
        ({"state": "offline", "online": False, "reason": "collector stopped"}, []),
        # answering garbage, however long: misbehaving, retried, never latched
        ({"state": "error", "online": False, "consecutive_failures": 3}, []),
        ({"state": "error", "online": False, "consecutive_failures": 1000}, []),
    ],
)
def test_faults_in_status(fields: dict[str, Any], codes: list[str]) -> None:
    assert faults_in_status(_status(**fields), lost_after_failures=3) == codes


@pytest.mark.parametrize(
    ("status", "device_status", "codes"),
    [
        ("charging", "Charging", []),
        ("fault", "FAULT", ["FAULT"]),
        ("fault", None, ["fault"]),
        (None, None, []),
    ],
)
def test_faults_in_telemetry(
    status: str | None, device_status: str | None, codes: list[str]
) -> None:
    assert faults_in_telemetry(status, device_status) == codes


def test_the_latch_keeps_faults_across_reopening_until_cleared(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with FaultLatch(path) as latch:
        new = latch.latch("a", ["Error 0x04"], source="status", detail="GroundFault", now_ms=5)
        assert [f.code for f in new] == ["Error 0x04"]
        assert latch.latch("a", ["Error 0x04"], source="status", detail=None, now_ms=6) == []
        assert latch.describe("a") == "Error 0x04 (GroundFault)"
        assert latch.describe("b") is None
    with FaultLatch(path) as latch:
        assert [(f.code, f.since_ms) for f in latch.latched("a")] == [("Error 0x04", 5)]
        assert [f.code for f in latch.clear("a")] == ["Error 0x04"]
        assert latch.clear("a") == []
    with FaultLatch(path) as latch:
        assert latch.latched("a") == []


def _reading(asset: str, ts_ms: int, power_w: float, **fields: Any) -> LiveReading:
    base: dict[str, Any] = {"soc_pct": None, "temp_c": None, "status": None, "device_status": None}
    return LiveReading(asset=asset, ts_ms=ts_ms, power_w=power_w, **(base | fields))


def test_parse_reading_takes_what_the_writer_needs_and_ignores_the_rest() -> None:
    t = Telemetry(
        site="s", asset="a", kind="inverter", ts_ms=10, seq=1, boot="b", power_w=-5.5,
        soc_pct=40.0, temp_c=31.0, status="discharging", device_status="RUNNING",
    )  # fmt: skip
    assert parse_reading(t.to_json()) == _reading(
        "a", 10, -5.5, soc_pct=40.0, temp_c=31.0, status="discharging", device_status="RUNNING"
    )
    assert parse_reading(b"{not json") is None
    assert parse_reading(b"[" * 5000 + b"]" * 5000) is None
    assert parse_reading(b'{"schema": "status/1", "asset": "a"}') is None
    assert parse_reading(b'{"schema": "telemetry/1", "asset": "a", "ts_ms": 1}') is None
    odd = b'{"schema": "telemetry/1", "asset": "a", "ts_ms": 1, "power_w": 1, "soc_pct": 140}'
    assert parse_reading(odd) == _reading("a", 1, 1.0)


def test_live_state_keeps_the_newest_and_forgets_old_readings() -> None:
    live = LiveState(max_age_ms=1_000)
    live.update(_reading("a", 100, 1.0, soc_pct=50.0))
    assert live.soc_pct("a", 1_100) == 50.0
    assert live.soc_pct("a", 1_101) is None  # too old
    assert live.derate("a", 200) == 1.0
    live.update(_reading("a", 200, 1.0, temp_c=85.0))
    assert live.derate("a", 300) == pytest.approx(0.25)


def test_live_state_parses_an_offered_payload_once_when_asked() -> None:
    live = LiveState(max_age_ms=1_000)
    t = Telemetry(site="s", asset="a", kind="inverter", ts_ms=10, seq=1, boot="b", power_w=7.0)
    live.offer("a", t.to_json())
    first = live.reading("a")
    assert first is not None and first.power_w == 7.0
    assert live.reading("a") is first  # parsed once
    live.offer("a", b"{not json")  # the latest is unreadable: unknown, not the older one
    assert live.reading("a") is None
    live.offer("b", t.to_json())  # a payload of another asset on b's topic is refused
    assert live.reading("b") is None


def test_headroom_is_the_limit_minus_the_other_assets() -> None:
    live = LiveState(max_age_ms=5_000)
    live.update(_reading("a", 1_000, 3_000.0))
    live.update(_reading("b", 1_000, 4_000.0))
    live.update(_reading("c", 1_000, -2_000.0))
    # a: others draw 4 kW - 2 kW = 2 kW
    assert live.headroom("a", 10_000.0, 5_000.0, 1_000) == SiteHeadroom(8_000.0, 7_000.0)
    # others beyond the limit leave nothing, never a negative headroom
    assert live.headroom("c", 6_000.0, None, 1_100) == SiteHeadroom(0.0, None)
    assert live.headroom("a", None, None, 1_000) == SiteHeadroom(None, None)
    # stale readings do not count (the sum is recomputed after 50 ms)
    assert live.headroom("a", 10_000.0, None, 7_000) == SiteHeadroom(10_000.0, None)


@dataclass(frozen=True)
class _Profile:
    max_charge_w: float | None
    max_discharge_w: float | None
    soc_min_pct: float | None
    soc_max_pct: float | None


def test_limits_for_narrows_with_the_profile_never_widens() -> None:
    site = parse_site(
        {
            "site": {"id": "s"},
            "assets": [
                {
                    "id": "a", "kind": "inverter", "host": "h", "max_charge_w": 10_000,
                    "max_discharge_w": 8_000, "soc_min_pct": 20, "soc_max_pct": 90,
                    "ramp_w_per_s": 500,
                }
            ],
        }
    )  # fmt: skip
    asset = site.assets[0]
    plain = limits_for(asset, derate=0.5, profile=None)
    assert (plain.soc_min_pct, plain.soc_max_pct, plain.ramp_w_per_s, plain.derate) == (
        20.0,
        90.0,
        500.0,
        0.5,
    )
    tight = limits_for(asset, derate=1.0, profile=_Profile(4_000.0, 0.0, 10.0, 80.0))
    assert (tight.profile_max_charge_w, tight.profile_max_discharge_w) == (4_000.0, 0.0)
    assert (tight.soc_min_pct, tight.soc_max_pct) == (20.0, 80.0)  # 10 % does not widen 20 %


def _command(n: int) -> DispatchCommand:
    return DispatchCommand(
        site="s", asset="a", ts_ms=n, seq=n, command_id=f"c{n}", issued_ms=n,
        setpoint_w=float(n), valid_until_ms=n + 1000, mode="droop", reason="t",
    )  # fmt: skip


def test_the_mailbox_drops_the_oldest_command_and_puts_stops_first() -> None:
    async def scenario() -> None:
        box = Mailbox(limit=2)
        assert box.put(Job("command", _command(1))) is None
        assert box.put(Job("command", _command(2))) is None
        dropped = box.put(Job("command", _command(3)))
        assert dropped is not None and dropped.command == _command(1)
        box.put_front(Job("stop"))
        kinds = [(await box.get(1.0)) for _ in range(3)]
        assert [j.kind if j else None for j in kinds] == ["stop", "command", "command"]
        assert [j.command.command_id for j in kinds[1:] if j and j.command] == ["c2", "c3"]
        assert await box.get(0.01) is None  # empty: the watchdog's timeout

    asyncio.run(scenario())
