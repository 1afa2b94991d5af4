"""Event-time clock for Bytewax windows: a watermark from the stream, idle heartbeats.

The watermark is ``max event time seen - allowed lateness``; it moves only with what the
stream carries, never with the clock of the machine the dataflow runs on:

* readings advance it by their event time (``ts_ms``);
* :class:`Heartbeat` items advance it while no reading comes. A source emits a heartbeat
  when it has handed over everything it received up to ``wall_ms``; if no reading has
  arrived (by its receive time) for ``idle_timeout`` before that, the watermark advances by
  the excess, so the last window closes when data stops: ``idle_timeout + lateness`` after
  its end, in wall time, when device clocks are right.

Why not Bytewax's :class:`~bytewax.operators.windowing.EventClock`, which extrapolates with
the wall clock of the dataflow: a dataflow that falls behind (a backlog replayed from the
persistent MQTT session, a stall of an overloaded machine) sees wall time pass while the
readings it has not processed yet are still on their way, and then calls them late. Here a
source that has not drained its input sends no heartbeat, so only real silence counts.
The clock is deterministic (a function of the items), which also makes it easy to test.

A heartbeat never enters a window: the clock gives it the smallest timestamp, so the window
operator routes it to its late stream, which the flow filters.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from bytewax.operators.windowing import UTC_MAX, UTC_MIN, Clock, ClockLogic

__all__ = [
    "EPOCH",
    "Heartbeat",
    "WatermarkClock",
    "WatermarkClockLogic",
    "WatermarkState",
    "from_epoch_ms",
    "utc_now",
]

V = TypeVar("V")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def from_epoch_ms(ms: int) -> datetime:
    """Return the aware UTC datetime of an epoch-millisecond time (exact, no float)."""
    return EPOCH + timedelta(milliseconds=ms)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The source had handed over every message it received up to ``wall_ms``.

    Attributes:
        wall_ms: Wall time of the source, UTC epoch ms.

    """

    wall_ms: int


@dataclass
class WatermarkState:
    """Snapshot-able state of the clock.

    Attributes:
        max_event: Largest event time seen, or ``None`` before the first reading.
        last_arrival: Latest receive time of a reading, or ``None`` before the first.
        watermark: Last watermark handed out (it never goes back).

    """

    max_event: datetime | None = None
    last_arrival: datetime | None = None
    watermark: datetime = UTC_MIN


@dataclass
class WatermarkClockLogic(ClockLogic[V, WatermarkState], Generic[V]):
    """The clock of one window operator key (see the module docstring)."""

    ts_getter: Callable[[V], datetime | None]
    arrival_getter: Callable[[V], datetime]
    lateness: timedelta
    idle_timeout: timedelta
    state: WatermarkState

    def _advance(self, candidate: datetime) -> datetime:
        self.state.watermark = max(self.state.watermark, candidate)
        return self.state.watermark

    def before_batch(self) -> None:
        """Nothing to do: the clock reads no wall clock."""

    def on_item(self, value: V) -> tuple[datetime, datetime]:
        """Return the item's event time and the watermark after seeing it.

        A heartbeat (``ts_getter`` returns ``None``) gets ``UTC_MIN``: always late, it
        never opens a window.
        """
        ts = self.ts_getter(value)
        arrival = self.arrival_getter(value)
        state = self.state
        if ts is None:
            if state.max_event is not None and state.last_arrival is not None:
                idle = arrival - state.last_arrival - self.idle_timeout
                if idle > timedelta(0):
                    self._advance(state.max_event - self.lateness + idle)
            return UTC_MIN, state.watermark
        if state.max_event is None or ts > state.max_event:
            state.max_event = ts
        if state.last_arrival is None or arrival > state.last_arrival:
            state.last_arrival = arrival
        return ts, self._advance(state.max_event - self.lateness)

    def on_notify(self) -> datetime:
        """Return the watermark (it only moves with items)."""
        return self.state.watermark

    def on_eof(self) -> datetime:
        """At the end of input every window is complete."""
        return UTC_MAX

    def to_system_utc(self, timestamp: datetime) -> datetime | None:
        """No timer wake-ups: readings and heartbeats drive the watermark."""
        return None

    def snapshot(self) -> WatermarkState:
        """Return a copy of the state for recovery."""
        return copy.deepcopy(self.state)


@dataclass
class WatermarkClock(Clock[V, WatermarkState], Generic[V]):
    """Event-time clock with allowed lateness, advanced through idle by heartbeats.

    Args:
        ts_getter: Event time of a reading (aware UTC), ``None`` for a heartbeat.
        arrival_getter: When a reading was received, or a heartbeat's wall time.
        lateness: How far behind the newest event time a reading may be and still count.
        idle_timeout: Silence (by receive time) after which heartbeats advance the
            watermark.

    """

    ts_getter: Callable[[V], datetime | None]
    arrival_getter: Callable[[V], datetime]
    lateness: timedelta
    idle_timeout: timedelta = timedelta(seconds=2)

    def build(self, resume_state: WatermarkState | None) -> WatermarkClockLogic[V]:
        """Build the clock logic for one key."""
        return WatermarkClockLogic(
            self.ts_getter,
            self.arrival_getter,
            self.lateness,
            self.idle_timeout,
            resume_state or WatermarkState(),
        )
