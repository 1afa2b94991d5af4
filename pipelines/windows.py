"""Event-time tumbling windows of frequency samples, closed by a watermark from the stream.

:class:`FrequencyWindows` is the whole state of one site: open windows (keyed by their
epoch-aligned start), the watermark, and what moves it. It reads no clock; only the items
move it, so it is deterministic and unit-tested without Bytewax.

* The watermark is ``max event time seen - lateness``.
* While no reading comes, :class:`Heartbeat` items move it. A source emits a heartbeat when
  it has handed over everything it received up to ``wall_ms``; once no reading has been
  received for ``idle_timeout_ms`` before that, the watermark advances by the excess. So
  the last window closes when data stops, ``idle_timeout + lateness`` after its end (wall
  time, device clocks right).
* A window ``[start, start + window_ms)`` closes when the watermark reaches its end. A
  sample whose window has closed is late: counted, logged once, left out (the reading
  itself is kept in history). A window never re-opens.

Why not Bytewax's windowing operators: their event clock extrapolates the watermark with
the wall clock of the dataflow, so a dataflow that falls behind (a backlog replayed from
the persistent MQTT session, a stall on an overloaded machine) calls the readings it has
not processed yet late; and the operator discards a key's state, clock included, once its
windows are closed, so a straggler re-opens a window that was already published.

:class:`FrequencyWindowLogic` runs the state under ``op.stateful_batch``, keyed by site.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import NamedTuple

from bytewax.operators import StatefulBatchLogic

from pipelines.frequency import (
    FrequencyAccumulator,
    FrequencySample,
    add_sample,
    window_start_ms,
)

__all__ = [
    "ArrivedSample",
    "FrequencyWindowLogic",
    "FrequencyWindows",
    "Heartbeat",
    "WindowInput",
    "WireSample",
    "sample_from_wire",
]

log = logging.getLogger(__name__)


class Heartbeat(NamedTuple):
    """The source had handed over every message it received up to ``wall_ms`` (UTC ms)."""

    wall_ms: int


class ArrivedSample(NamedTuple):
    """A frequency sample and when the pipeline received it (UTC epoch ms)."""

    sample: FrequencySample
    received_ms: int


#: An :class:`ArrivedSample` between processes, a plain tuple (cheap to pickle):
#: ``(site, asset, ts_ms, freq_hz, received_ms)``.
WireSample = tuple[str, str, int, float, int]

WindowInput = ArrivedSample | WireSample | Heartbeat


def sample_from_wire(wire: WireSample) -> ArrivedSample:
    """The sample back from its wire tuple."""
    site, asset, ts_ms, freq_hz, received_ms = wire
    return ArrivedSample(FrequencySample(site, asset, ts_ms, freq_hz), received_ms)


#: A closed window: its start (UTC epoch ms) and what it holds.
ClosedWindow = tuple[int, FrequencyAccumulator]


@dataclass
class FrequencyWindows:
    """Open windows and watermark of one site (see the module docstring).

    Attributes:
        window_ms: Window length, ms.
        lateness_ms: How far behind the newest event time a sample may be, ms.
        idle_timeout_ms: Silence (by receive time) before heartbeats move the watermark, ms.
        max_event_ms: Newest event time seen, or None.
        last_arrival_ms: Latest receive time of a sample, or None.
        watermark_ms: Every window ending at or before it is closed, or None.
        open: Open windows by start.
        late: Samples refused because their window had closed.

    """

    window_ms: int
    lateness_ms: int
    idle_timeout_ms: int
    max_event_ms: int | None = None
    last_arrival_ms: int | None = None
    watermark_ms: int | None = None
    open: dict[int, FrequencyAccumulator] = field(default_factory=dict)
    late: int = 0

    def _advance(self, candidate_ms: int) -> None:
        if self.watermark_ms is None or candidate_ms > self.watermark_ms:
            self.watermark_ms = candidate_ms

    def add(self, item: ArrivedSample) -> bool:
        """Put a sample in its window; False (and counted) when that window has closed."""
        start = window_start_ms(item.sample.ts_ms, self.window_ms)
        if self.watermark_ms is not None and start + self.window_ms <= self.watermark_ms:
            self.late += 1
            return False
        acc = self.open.get(start)
        if acc is None:
            acc = self.open[start] = FrequencyAccumulator()
        add_sample(acc, item.sample)
        if self.max_event_ms is None or item.sample.ts_ms > self.max_event_ms:
            self.max_event_ms = item.sample.ts_ms
        if self.last_arrival_ms is None or item.received_ms > self.last_arrival_ms:
            self.last_arrival_ms = item.received_ms
        self._advance(self.max_event_ms - self.lateness_ms)
        return True

    def heartbeat(self, beat: Heartbeat) -> None:
        """Move the watermark by the silence beyond the idle timeout, if any."""
        if self.max_event_ms is None or self.last_arrival_ms is None:
            return
        idle_ms = beat.wall_ms - self.last_arrival_ms - self.idle_timeout_ms
        if idle_ms > 0:
            self._advance(self.max_event_ms - self.lateness_ms + idle_ms)

    def close_due(self) -> list[ClosedWindow]:
        """Remove and return the windows the watermark has passed, oldest first."""
        if self.watermark_ms is None:
            return []
        due = sorted(s for s in self.open if s + self.window_ms <= self.watermark_ms)
        return [(start, self.open.pop(start)) for start in due]

    def close_all(self) -> list[ClosedWindow]:
        """Remove and return every open window, oldest first (end of input)."""
        closed = sorted(self.open.items())
        self.open.clear()
        return closed


class FrequencyWindowLogic(StatefulBatchLogic[WindowInput, ClosedWindow, FrequencyWindows]):
    """Bytewax logic of one site: feed the items, emit the windows that closed.

    The state is never discarded while the dataflow runs (one small state per site), so
    the watermark survives quiet periods and a window is published once.
    """

    def __init__(self, state: FrequencyWindows) -> None:
        self.state = state

    def on_batch(self, values: list[WindowInput]) -> tuple[list[ClosedWindow], bool]:
        """Apply a batch in order; emit what closed."""
        state = self.state
        for item in values:
            if isinstance(item, Heartbeat):
                state.heartbeat(item)
                continue
            value = item if isinstance(item, ArrivedSample) else sample_from_wire(item)
            if not state.add(value):
                if state.late == 1:
                    log.warning(
                        "frequency sample of %s at ts_ms=%d came after its window closed; "
                        "late samples are kept in history but not in grid frequency",
                        value.sample.asset,
                        value.sample.ts_ms,
                    )
                else:
                    log.debug("late frequency sample #%d", state.late)
        return state.close_due(), False

    def on_eof(self) -> tuple[list[ClosedWindow], bool]:
        """End of input: every open window is complete."""
        return self.state.close_all(), False

    def snapshot(self) -> FrequencyWindows:
        """Return a copy of the state for recovery."""
        return copy.deepcopy(self.state)
