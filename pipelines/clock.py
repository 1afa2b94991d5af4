"""Event-time clock for Bytewax windows: a watermark from the stream plus a wall-clock timeout.

The watermark is ``max event time seen - allowed lateness``. While readings keep coming it
is driven by the stream only, so a backlog (a persistent MQTT session replaying what was
queued while the pipeline was down) is windowed by its own timestamps however fast or
slowly it is processed, and a pause of the dataflow itself (a Parquet flush, a GC) does
not make readings late. When no reading has arrived for ``idle_timeout``, the watermark
advances with the wall clock, so the last window still closes when data stops: at most
``idle_timeout + lateness`` after its end, in wall time, when device clocks are right.

Compared with Bytewax's :class:`~bytewax.operators.windowing.EventClock`, which always
extrapolates with the wall clock from the arrival of the newest event:

* the wall clock only counts after ``idle_timeout`` without any arrival, so readings that
  lag behind the newest one (a backlog, a stalled worker) are not declared late;
* :meth:`WatermarkClockLogic.to_system_utc` maps a window's close time to the wall time at
  which the watermark will reach it, so the runtime wakes up once, at the right moment,
  even when device clocks (or replayed data) are far from the pipeline's clock; the stock
  clock passes the event time through, which wakes the runtime in a busy loop for data from
  the past.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from bytewax.operators.windowing import UTC_MAX, UTC_MIN, Clock, ClockLogic

__all__ = ["WatermarkClock", "WatermarkClockLogic", "WatermarkState", "utc_now"]

V = TypeVar("V")


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


@dataclass
class WatermarkState:
    """Snapshot-able state of the clock.

    Attributes:
        max_event: Largest event time seen, or ``None`` before the first item.
        last_arrival: Wall time of the last item.
        watermark: Last watermark handed out (it never goes back).

    """

    max_event: datetime | None
    last_arrival: datetime
    watermark: datetime


@dataclass
class WatermarkClockLogic(ClockLogic[V, WatermarkState], Generic[V]):
    """The clock of one window operator key (see the module docstring)."""

    now_getter: Callable[[], datetime]
    ts_getter: Callable[[V], datetime]
    lateness: timedelta
    idle_timeout: timedelta
    state: WatermarkState

    def __post_init__(self) -> None:
        self._now = self.now_getter()

    def _extrapolated(self) -> datetime:
        if self.state.max_event is None:
            return UTC_MIN
        idle = self._now - self.state.last_arrival - self.idle_timeout
        return self.state.max_event - self.lateness + max(idle, timedelta(0))

    def _advance(self, candidate: datetime) -> datetime:
        self.state.watermark = max(self.state.watermark, candidate)
        return self.state.watermark

    def before_batch(self) -> None:
        """Read the wall clock once per batch (never going back)."""
        now = self.now_getter()
        self._now = max(self._now, now)

    def on_item(self, value: V) -> tuple[datetime, datetime]:
        """Return the item's event time and the watermark after seeing it."""
        ts = self.ts_getter(value)
        self._advance(self._extrapolated())
        if self.state.max_event is None or ts > self.state.max_event:
            self.state.max_event = ts
        self.state.last_arrival = self._now
        return ts, self._advance(self.state.max_event - self.lateness)

    def on_notify(self) -> datetime:
        """Return the watermark now (advanced by the wall clock once the input is idle)."""
        self.before_batch()
        return self._advance(self._extrapolated())

    def on_eof(self) -> datetime:
        """At the end of input every window is complete."""
        return UTC_MAX

    def to_system_utc(self, timestamp: datetime) -> datetime | None:
        """Wall time at which the watermark reaches ``timestamp`` if nothing else arrives."""
        if self.state.max_event is None:
            return None
        wait = timestamp - (self.state.max_event - self.lateness)
        if wait <= timedelta(0):
            return self.state.last_arrival  # already reached
        return self.state.last_arrival + self.idle_timeout + wait

    def snapshot(self) -> WatermarkState:
        """Return a copy of the state for recovery."""
        return copy.deepcopy(self.state)


@dataclass
class WatermarkClock(Clock[V, WatermarkState], Generic[V]):
    """Event-time clock with allowed lateness and a wall-clock timeout.

    Args:
        ts_getter: Event time of an item, an aware UTC datetime.
        lateness: How far behind the newest event time an item may be and still count.
        idle_timeout: Wall time without any item after which the watermark advances with
            the wall clock.
        now_getter: Wall clock (injectable for tests).

    """

    ts_getter: Callable[[V], datetime]
    lateness: timedelta
    idle_timeout: timedelta = timedelta(seconds=1)
    now_getter: Callable[[], datetime] = utc_now

    def build(self, resume_state: WatermarkState | None) -> WatermarkClockLogic[V]:
        """Build the clock logic for one key."""
        state = resume_state or WatermarkState(
            max_event=None, last_arrival=self.now_getter(), watermark=UTC_MIN
        )
        return WatermarkClockLogic(
            self.now_getter, self.ts_getter, self.lateness, self.idle_timeout, state
        )
