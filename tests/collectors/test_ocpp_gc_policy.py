"""When the CSMS freezes its long-lived objects for the GC, and reclaims closed sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from collectors.ocpp import cli, gc_policy
from collectors.ocpp.csms import Csms, CsmsSettings, StationConfig
from collectors.ocpp.gc_policy import FreezePolicy


def run_ticks(
    policy: FreezePolicy, ticks: list[tuple[float, int, int, int]]
) -> list[gc_policy.FreezeAction | None]:
    """Feed (now_s, connections, disconnections, connected) rows; the decisions."""
    return [
        policy.decide(now, connections=c, disconnections=d, connected=n) for now, c, d, n in ticks
    ]


def test_freezes_once_after_the_fleet_has_connected_and_settled() -> None:
    decisions = run_ticks(
        FreezePolicy(settle_s=5.0),
        [
            (0.0, 0, 0, 0),  # nothing connected yet: nothing to do
            (2.0, 400, 0, 400),  # connecting
            (4.0, 1000, 0, 1000),  # still connecting
            (8.0, 1000, 0, 1000),  # 4 s since the last change: not settled
            (10.0, 1000, 0, 1000),  # settled: freeze
            (12.0, 1000, 0, 1000),  # nothing new
            (60.0, 1000, 0, 1000),
        ],
    )
    assert decisions == [None, None, None, None, "freeze", None, None]


def test_a_reconnecting_station_is_frozen_after_it_settles() -> None:
    policy = FreezePolicy(settle_s=5.0)
    run_ticks(policy, [(0.0, 10, 0, 10), (6.0, 10, 0, 10)])  # frozen at 6 s
    decisions = run_ticks(policy, [(7.0, 11, 1, 10), (9.0, 11, 1, 10), (12.0, 11, 1, 10)])
    assert decisions == [None, None, "freeze"]


def test_reclaims_once_a_quarter_of_the_fleet_has_disconnected() -> None:
    policy = FreezePolicy(settle_s=5.0, reclaim_fraction=0.25, reclaim_min=50)
    run_ticks(policy, [(0.0, 1000, 0, 1000), (6.0, 1000, 0, 1000)])
    decisions = run_ticks(
        policy,
        [
            (10.0, 1000, 150, 850),  # 150 closed sessions: below a quarter of 850 connected
            (20.0, 1000, 300, 700),  # 300 >= 175: reclaim (connections unchanged: settled)
            (30.0, 1000, 300, 700),  # nothing new since
        ],
    )
    assert decisions == [None, "reclaim", None]


def test_small_fleets_reclaim_only_after_reclaim_min_disconnections() -> None:
    policy = FreezePolicy(settle_s=1.0, reclaim_min=50)
    run_ticks(policy, [(0.0, 4, 0, 4), (2.0, 4, 0, 4)])
    assert run_ticks(policy, [(3.0, 4, 49, 0), (4.0, 4, 50, 0)]) == [None, "reclaim"]


def test_flapping_connections_postpone_every_decision_until_they_stop() -> None:
    policy = FreezePolicy(settle_s=5.0)
    ticks = [(float(t), 100 + t, t, 100) for t in range(0, 20, 2)]  # a connect every 2 s
    assert set(run_ticks(policy, ticks)) == {None}
    assert run_ticks(policy, [(23.0, 118, 18, 100)]) == ["freeze"]


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The decisions the CLI applies, recorded instead of touching this process's GC."""
    actions: list[str] = []
    monkeypatch.setattr(gc_policy, "apply", actions.append)
    yield actions


def test_the_collect_command_freezes_at_start_and_after_stations_settle(
    applied: list[str],
) -> None:
    stations = {"cs1": StationConfig.single("cs1", "evse-1", "station-password-0123", 22_000, 0)}
    csms = Csms(CsmsSettings(site_id="s1", stations=stations, port=0), _NullPublisher())

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.ensure_future(
            cli.run(csms, stop, policy=FreezePolicy(settle_s=0.05), tick_s=0.01)
        )
        await asyncio.sleep(0.05)
        csms.stats.connections += 1  # as a station connecting would
        for _ in range(100):
            if applied.count("freeze") >= 2:
                break
            await asyncio.sleep(0.01)
        stop.set()
        await task

    asyncio.run(scenario())
    assert applied == ["freeze", "freeze"]


class _NullPublisher:
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        return True
