"""The windows' clock: watermark from readings, idle heartbeats, never the dataflow's clock."""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

from bytewax.operators.windowing import UTC_MAX, UTC_MIN

from pipelines.clock import (
    Heartbeat,
    WatermarkClock,
    WatermarkClockLogic,
    WatermarkState,
    from_epoch_ms,
)

T0 = 1_700_000_000_000
LATENESS = timedelta(milliseconds=500)
IDLE = timedelta(milliseconds=2000)


class Reading(NamedTuple):
    ts_ms: int
    received_ms: int


Item = Reading | Heartbeat


def ev(ms: int) -> object:
    return from_epoch_ms(T0 + ms)


def reading(ts: int, received: int | None = None) -> Reading:
    """A reading at T0 + ts, received at T0 + received (default: 20 ms later)."""
    return Reading(T0 + ts, T0 + (received if received is not None else ts + 20))


def beat(wall: int) -> Heartbeat:
    return Heartbeat(T0 + wall)


def make(state: WatermarkState | None = None) -> WatermarkClockLogic[Item]:
    clock: WatermarkClock[Item] = WatermarkClock(
        ts_getter=lambda i: from_epoch_ms(i.ts_ms) if isinstance(i, Reading) else None,
        arrival_getter=lambda i: from_epoch_ms(
            i.received_ms if isinstance(i, Reading) else i.wall_ms
        ),
        lateness=LATENESS,
        idle_timeout=IDLE,
    )
    return clock.build(state)


def test_watermark_is_newest_event_minus_lateness() -> None:
    logic = make()
    assert logic.on_item(reading(1000)) == (ev(1000), ev(500))
    assert logic.on_item(reading(1200)) == (ev(1200), ev(700))


def test_older_readings_do_not_move_the_watermark() -> None:
    logic = make()
    logic.on_item(reading(2000))
    assert logic.on_item(reading(1700)) == (ev(1700), ev(1500))


def test_heartbeats_within_the_idle_timeout_change_nothing() -> None:
    logic = make()
    logic.on_item(reading(1000, received=1000))
    assert logic.on_item(beat(2900)) == (UTC_MIN, ev(500))
    assert logic.on_item(beat(3000)) == (UTC_MIN, ev(500))  # exactly the timeout: not yet


def test_heartbeats_after_the_idle_timeout_advance_the_watermark_by_the_excess() -> None:
    logic = make()
    logic.on_item(reading(1000, received=1000))
    _, watermark = logic.on_item(beat(3300))
    assert watermark == ev(800)  # 300 ms of silence beyond the timeout
    _, watermark = logic.on_item(beat(4500))
    assert watermark == ev(2000)  # the window [1000, 2000) can close now


def test_a_heartbeat_is_always_late_so_it_never_opens_a_window() -> None:
    logic = make()
    ts, watermark = logic.on_item(beat(0))
    assert ts == UTC_MIN and ts <= watermark


def test_a_backlog_is_windowed_by_its_own_timestamps_however_slowly_it_comes() -> None:
    # Readings queued while the pipeline was busy arrive long after they were measured,
    # with no heartbeat in between (the source had not drained its input).
    logic = make()
    for i in range(50):
        ts, watermark = logic.on_item(reading(i * 200, received=i * 200 + 30_000))
        assert ts >= watermark  # none of them is late
    assert logic.on_notify() == ev(49 * 200 - 500)


def test_the_watermark_never_goes_back() -> None:
    logic = make()
    logic.on_item(reading(1000, received=1000))
    _, advanced = logic.on_item(beat(6000))
    _, watermark = logic.on_item(reading(1100, received=6100))
    assert watermark == advanced == ev(3500)


def test_the_clock_wakes_nobody_and_closes_everything_at_the_end() -> None:
    logic = make()
    logic.on_item(reading(1000))
    assert logic.to_system_utc(ev(2000)) is None  # readings and heartbeats drive it
    assert logic.on_eof() == UTC_MAX


def test_snapshot_resumes_the_same_watermark() -> None:
    logic = make()
    logic.on_item(reading(1000, received=1000))
    resumed = make(logic.snapshot())
    assert resumed.on_notify() == ev(500)
    assert resumed.on_item(beat(3500))[1] == ev(1000)
