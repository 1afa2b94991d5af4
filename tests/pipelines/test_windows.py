"""Event-time windows: watermark from readings, idle heartbeats, no clock of their own."""

from __future__ import annotations

import pickle

from pipelines.frequency import FrequencySample
from pipelines.windows import ArrivedSample, FrequencyWindowLogic, FrequencyWindows, Heartbeat

T0 = 1_700_000_000_000


def reading(ts: int, freq_hz: float = 50.0, *, received: int | None = None, asset: str = "a"):
    """A sample at T0 + ts, received at T0 + received (default: 20 ms later)."""
    received_ms = T0 + (received if received is not None else ts + 20)
    return ArrivedSample(FrequencySample("s1", asset, T0 + ts, freq_hz), received_ms)


def beat(wall: int) -> Heartbeat:
    return Heartbeat(T0 + wall)


def windows() -> FrequencyWindows:
    return FrequencyWindows(window_ms=1000, lateness_ms=500, idle_timeout_ms=2000)


def starts(closed: list) -> list[int]:
    return [start - T0 for start, _ in closed]


def test_watermark_is_newest_event_time_minus_lateness() -> None:
    w = windows()
    w.add(reading(1000))
    assert w.watermark_ms == T0 + 500
    w.add(reading(700))  # older: does not move it
    assert w.watermark_ms == T0 + 500


def test_a_window_closes_when_the_watermark_reaches_its_end() -> None:
    w = windows()
    w.add(reading(100))
    w.add(reading(1400))  # watermark 900: window 0 still open
    assert w.close_due() == []
    w.add(reading(1500))  # watermark 1000
    assert starts(w.close_due()) == [0]


def test_a_sample_whose_window_closed_is_late_and_counted() -> None:
    w = windows()
    w.add(reading(100))
    w.add(reading(1600))
    w.close_due()
    assert not w.add(reading(999, freq_hz=49.0))
    assert w.late == 1
    assert list(w.open) == [T0 + 1000]  # window 0 did not re-open


def test_a_sample_behind_the_watermark_still_counts_while_its_window_is_open() -> None:
    w = windows()
    w.add(reading(1000))
    w.add(reading(1700))  # watermark 1200, window [1000, 2000) open
    assert w.add(reading(1100, asset="b"))
    assert w.open[T0 + 1000].samples == 3


def test_heartbeats_within_the_idle_timeout_change_nothing() -> None:
    w = windows()
    w.add(reading(900, received=910))
    w.heartbeat(beat(2910))  # exactly the timeout
    assert w.watermark_ms == T0 + 400
    assert w.close_due() == []


def test_heartbeats_after_the_idle_timeout_advance_by_the_excess_and_close_the_window() -> None:
    w = windows()
    w.add(reading(900, received=910))
    w.heartbeat(beat(3000))
    assert w.watermark_ms == T0 + 490  # 90 ms of silence beyond the timeout
    w.heartbeat(beat(3520))
    assert w.watermark_ms == T0 + 1010
    (closed,) = w.close_due()
    assert closed[0] == T0 and closed[1].samples == 1


def test_a_backlog_is_windowed_by_its_own_timestamps_however_late_it_is_received() -> None:
    w = windows()
    for i in range(50):  # received 30 s after measurement, no heartbeat in between
        assert w.add(reading(i * 200, received=i * 200 + 30_000))
    assert w.late == 0
    assert starts(w.close_due()) == list(range(0, 9000, 1000))


def test_a_heartbeat_before_any_reading_does_nothing() -> None:
    w = windows()
    w.heartbeat(beat(10_000))
    assert w.watermark_ms is None and w.close_due() == []


def test_the_watermark_never_goes_back() -> None:
    w = windows()
    w.add(reading(1000, received=1000))
    w.heartbeat(beat(6000))
    advanced = w.watermark_ms
    w.add(reading(3600, received=6100))
    assert w.watermark_ms == advanced == T0 + 3500


def test_end_of_input_closes_every_window_oldest_first() -> None:
    w = windows()
    for ts in (1200, 100, 2500):
        w.add(reading(ts))
    assert starts(w.close_all()) == [0, 1000, 2000]
    assert w.open == {}


def test_the_bytewax_logic_emits_closed_windows_and_keeps_its_state() -> None:
    logic = FrequencyWindowLogic(windows())
    emitted, discard = logic.on_batch([reading(100), reading(1600), beat(1700)])
    assert starts(emitted) == [0] and discard is False
    emitted, _ = logic.on_batch([reading(999)])  # late: the closed window stays closed
    assert emitted == [] and logic.state.late == 1
    emitted, _ = logic.on_eof()
    assert starts(emitted) == [1000]


def test_the_state_survives_a_snapshot() -> None:
    logic = FrequencyWindowLogic(windows())
    logic.on_batch([reading(100), reading(1200)])
    resumed = FrequencyWindowLogic(pickle.loads(pickle.dumps(logic.snapshot())))
    assert resumed.state.watermark_ms == T0 + 700
    assert starts(resumed.on_eof()[0]) == [0, 1000]
