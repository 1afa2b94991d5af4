"""The simulated stations' meter-value schedule and hot-path CALLs.

``bench/ocpp.py`` depends on them: stations that stay on their own phase send uniformly
over the second instead of in bursts.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from ocpp.exceptions import FormatViolationError

from simulators.charger.fleet import StationSpec
from simulators.charger.handlers import SimChargePoint21
from simulators.charger.station import SimStation
from simulators.charger.wire import next_meter_s
from simulators.ev import CarSpec

# --------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("due_s", "now_s", "expected_s"),
    [
        (10.0, 10.0, 11.0),  # on time: one interval later
        (10.0, 10.3, 11.0),  # a little late: the phase is kept
        (10.0, 10.99, 11.0),  # late by almost an interval: still the next slot
        (10.0, 11.0, 12.0),  # the next slot has come: skipped, not sent twice
        (10.0, 13.5, 14.0),  # three slots missed: skipped
    ],
)
def test_next_meter_value_keeps_the_phase_and_skips_missed_slots(
    due_s: float, now_s: float, expected_s: float
) -> None:
    assert next_meter_s(due_s, 1.0, now_s) == pytest.approx(expected_s)


def test_stations_made_late_together_keep_their_own_phases() -> None:
    """A 0.8 s stall of the simulator must not line 500 stations up into one burst."""
    rng = random.Random(1)
    due = [rng.uniform(0.0, 1.0) for _ in range(500)]
    stall_end_s = 0.8
    # every station due during the stall sends right after it, 0.2 ms apart
    sent = [max(d, stall_end_s + i * 0.0002) for i, d in enumerate(sorted(due))]
    following = [next_meter_s(d, 1.0, s) for d, s in zip(sorted(due), sent, strict=True)]
    phases_ms = sorted(round((f % 1.0) * 1000) for f in following)
    busiest_50ms = max(
        sum(1 for p in phases_ms if start <= p < start + 50) for start in range(0, 1000, 10)
    )
    assert busiest_50ms < 50  # uniform: ~25 per 50 ms; re-phased after the stall: ~250


# --------------------------------------------------------------------------- call_wire


class _Wire:
    """A connection that records what the station sends."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, message: str) -> None:
        self.sent.append(message)

    async def recv(self) -> str:  # not used: the tests call route_message
        await asyncio.Event().wait()
        return ""


def station_cp(response_timeout_s: float = 5.0) -> tuple[SimChargePoint21, _Wire]:
    wire = _Wire()
    cp = SimChargePoint21("cs-1", wire, response_timeout=response_timeout_s)
    cp.station = SimStation(
        StationSpec.single("cs-1", None, "2.1", CarSpec()), "ws://127.0.0.1:1/ocpp"
    )
    cp._unique_id_generator = iter(f"id-{n}" for n in range(1, 100)).__next__
    return cp, wire


async def answer_after_send(cp: SimChargePoint21, wire: _Wire, frames: list[str]) -> None:
    while not wire.sent:
        await asyncio.sleep(0)
    for frame in frames:
        await cp.route_message(frame)


def test_call_wire_sends_a_compact_call_and_returns_the_matching_answer() -> None:
    cp, wire = station_cp()
    payload: dict[str, Any] = {"evseId": 1, "meterValue": [{"timestamp": "t", "sampledValue": []}]}

    async def scenario() -> dict[str, Any]:
        call = asyncio.ensure_future(cp.call_wire("MeterValues", payload))
        await answer_after_send(cp, wire, ['[3,"other-id",{"x":1}]', '[3,"id-1",{"ok":true}]'])
        return await call

    assert asyncio.run(scenario()) == {"ok": True}
    assert wire.sent == [json.dumps([2, "id-1", "MeterValues", payload], separators=(",", ":"))]


def test_call_wire_raises_the_callerror_the_csms_answered() -> None:
    cp, wire = station_cp()

    async def scenario() -> None:
        call = asyncio.ensure_future(cp.call_wire("Heartbeat", {}))
        await answer_after_send(cp, wire, ['[4,"id-1","FormatViolation","bad",{}]'])
        await call

    with pytest.raises(FormatViolationError):
        asyncio.run(scenario())


def test_call_wire_times_out_without_an_answer() -> None:
    cp, _wire = station_cp(response_timeout_s=0.05)
    with pytest.raises(TimeoutError):
        asyncio.run(cp.call_wire("Heartbeat", {}))
