"""When the collector polls (pure): the fixed-rate schedule, lateness statistics, backoff."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["LatenessStats", "PollSchedule", "backoff_s"]


@dataclass
class PollSchedule:
    """Fixed-rate schedule: slot ``n`` is due at ``start_s + n * interval_s``.

    ``begin(now_s)`` is called when a poll starts: if ``now_s`` has reached a later slot,
    the slots in between are counted missed and skipped; it returns the lateness against
    the slot being served. ``finish()`` moves to the next slot.
    """

    start_s: float
    interval_s: float
    slot: int = 0
    missed: int = 0

    def due_s(self) -> float:
        """When the current slot is due."""
        return self.start_s + self.slot * self.interval_s

    def begin(self, now_s: float) -> float:
        """Serve the latest due slot at ``now_s``; returns lateness in seconds (>= 0)."""
        latest = math.floor((now_s - self.start_s) / self.interval_s + 1e-9)
        if latest > self.slot:
            self.missed += latest - self.slot
            self.slot = latest
        return max(0.0, now_s - self.due_s())

    def finish(self) -> None:
        """The current slot was served; the next one is due one interval later."""
        self.slot += 1

    def resume(self, now_s: float) -> None:
        """After an outage: continue at the first slot not before ``now_s`` (none missed)."""
        self.slot = max(self.slot, math.ceil((now_s - self.start_s) / self.interval_s - 1e-9))


@dataclass
class LatenessStats:
    """Histogram of poll lateness (0.1 ms buckets up to 1 s, then one overflow bucket)."""

    bucket_ms: float = 0.1
    buckets: int = 10_000
    counts: list[int] = field(default_factory=list)
    polls: int = 0
    max_ms: float = 0.0
    total_ms: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (self.buckets + 1)

    def record(self, lateness_s: float) -> None:
        """Count one poll that started ``lateness_s`` after its due time."""
        ms = lateness_s * 1000.0
        self.counts[min(int(ms / self.bucket_ms), self.buckets)] += 1
        self.polls += 1
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)

    def percentile_ms(self, q: float) -> float | None:
        """Upper edge of the bucket holding the ``q`` quantile (0..1); None if empty."""
        if self.polls == 0:
            return None
        rank = math.ceil(q * self.polls)
        seen = 0
        for i, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return (i + 1) * self.bucket_ms if i < self.buckets else self.max_ms
        return self.max_ms


def backoff_s(failures: int, initial_s: float, max_s: float) -> float:
    """Retry delay after ``failures`` consecutive failures: doubling from ``initial_s``."""
    return min(initial_s * 2 ** max(failures - 1, 0), max_s)
