"""The event-time clock: watermark from the stream, wall-clock timeout, wake-up times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bytewax.operators.windowing import UTC_MAX

from pipelines.clock import WatermarkClock, WatermarkClockLogic

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WALL0 = datetime(2030, 1, 1, tzinfo=UTC)  # wall clock far from the event times on purpose
LATENESS = timedelta(milliseconds=500)
IDLE = timedelta(milliseconds=1000)


class FakeWall:
    def __init__(self) -> None:
        self.now = WALL0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += timedelta(milliseconds=ms)


def ev(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=1_700_000_000_000 + ms)


def make() -> tuple[WatermarkClockLogic[int], FakeWall]:
    wall = FakeWall()
    clock: WatermarkClock[int] = WatermarkClock(ts_getter=ev, lateness=LATENESS, now_getter=wall)
    return clock.build(None), wall


def test_watermark_is_newest_event_minus_lateness_while_items_arrive() -> None:
    logic, wall = make()
    logic.before_batch()
    assert logic.on_item(1000) == (ev(1000), ev(500))
    wall.advance(1)
    logic.before_batch()
    assert logic.on_item(1200) == (ev(1200), ev(700))


def test_older_items_do_not_move_the_watermark() -> None:
    logic, _ = make()
    logic.before_batch()
    logic.on_item(2000)
    ts, watermark = logic.on_item(1700)
    assert ts == ev(1700)
    assert watermark == ev(1500)


def test_watermark_advances_with_the_wall_clock_once_the_input_is_idle() -> None:
    logic, wall = make()
    logic.before_batch()
    logic.on_item(1000)
    wall.advance(1000)  # idle for exactly the timeout: not yet
    assert logic.on_notify() == ev(500)
    wall.advance(300)
    assert logic.on_notify() == ev(800)
    wall.advance(700)
    assert logic.on_notify() == ev(1500)


def test_a_pause_shorter_than_the_idle_timeout_does_not_make_items_late() -> None:
    logic, wall = make()
    logic.before_batch()
    logic.on_item(5000)
    wall.advance(900)  # the worker stalled (a flush, a GC) while readings queued up
    logic.before_batch()
    ts, watermark = logic.on_item(4800)
    assert watermark == ev(4500)
    assert ts >= watermark  # still in time


def test_a_steady_trickle_of_lagging_items_holds_the_watermark() -> None:
    logic, wall = make()
    logic.before_batch()
    logic.on_item(5000)
    for ms in range(3000, 4000, 100):  # a backlog that lags the newest reading
        wall.advance(400)
        logic.before_batch()
        logic.on_item(ms)
    # 4 s of wall time since the newest reading; Bytewax's EventClock would be at 8500.
    assert logic.on_notify() == ev(4500)


def test_wake_up_time_is_when_the_watermark_reaches_the_window_end() -> None:
    logic, wall = make()
    logic.before_batch()
    logic.on_item(1200)  # window [1000, 2000) closes when the watermark reaches 2000
    # watermark now 700: the idle timeout, then 1300 ms of wall time.
    assert logic.to_system_utc(ev(2000)) == WALL0 + timedelta(milliseconds=1000 + 1300)
    wall.advance(2300)
    assert logic.on_notify() == ev(2000)


def test_a_window_end_already_reached_wakes_at_once() -> None:
    logic, _ = make()
    logic.before_batch()
    logic.on_item(3000)
    assert logic.to_system_utc(ev(2000)) == WALL0


def test_the_watermark_never_goes_back() -> None:
    logic, wall = make()
    logic.before_batch()
    logic.on_item(1000)
    wall.advance(3000)
    advanced = logic.on_notify()
    logic.before_batch()
    _, watermark = logic.on_item(1100)  # fresh item after a pause: no regression
    assert watermark == advanced == ev(2500)


def test_end_of_input_closes_everything() -> None:
    logic, _ = make()
    assert logic.on_eof() == UTC_MAX


def test_no_wake_up_before_the_first_item() -> None:
    logic, _ = make()
    assert logic.to_system_utc(ev(0)) is None


def test_snapshot_resumes_the_same_watermark() -> None:
    logic, wall = make()
    logic.before_batch()
    logic.on_item(1000)
    resumed = WatermarkClock(
        ts_getter=ev, lateness=LATENESS, idle_timeout=IDLE, now_getter=wall
    ).build(logic.snapshot())
    resumed.before_batch()
    assert resumed.on_notify() == ev(500)
