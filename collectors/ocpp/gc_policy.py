"""When the CSMS freezes its long-lived objects out of the garbage collector's way.

A full collection walks every object the GC tracks. In the CSMS that is ~58,000 objects
after the imports and ~120 more per connected station (its WebSocket connection, session,
tasks and state): at 1,000 stations ~180,000 objects, and a full collection paused the event
loop for 170-280 ms on the 2-core development VM, about once a minute — every message
arriving meanwhile waited, which made the 99th-percentile latency. ``gc.freeze()`` moves
every object alive at that moment to a permanent generation that collections skip; objects
created later are collected as usual, and full collections then walk only those.

A frozen object that later becomes cyclic garbage (the session of a station that
disconnected) is not reclaimed until ``gc.unfreeze()``. So:

- ``freeze`` once the set of connections has been stable for ``settle_s`` after it
  changed (a fleet connecting, a station reconnecting); the CLI also freezes once at
  start-up, after the imports;
- ``reclaim`` (unfreeze, one full collection, freeze again: one pause of the old length)
  once the disconnections since the last reclaim reach ``reclaim_fraction`` of the
  connected stations (at least ``reclaim_min``), so the memory of closed sessions stays
  bounded.

``FreezePolicy.decide`` only decides (pure); ``apply``, called by ``collectors.ocpp.cli``,
carries a decision out.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from typing import Literal

__all__ = ["FreezeAction", "FreezePolicy", "apply"]

log = logging.getLogger(__name__)

FreezeAction = Literal["freeze", "reclaim"]


@dataclass
class FreezePolicy:
    """Decides from the CSMS's connection counters when to freeze or reclaim (module doc).

    ``connections`` and ``disconnections`` are the running totals since start
    (``CsmsStats``); ``connected`` is the number of stations connected now.
    """

    settle_s: float = 5.0
    reclaim_fraction: float = 0.25
    reclaim_min: int = 50
    _seen_connections: int = 0
    _changed_s: float | None = None
    _frozen_connections: int = 0
    _reclaimed_disconnections: int = 0

    def decide(
        self, now_s: float, *, connections: int, disconnections: int, connected: int
    ) -> FreezeAction | None:
        """What to do now (None: nothing); call it every few seconds."""
        if connections != self._seen_connections:
            self._seen_connections = connections
            self._changed_s = now_s
            return None
        if self._changed_s is None or now_s - self._changed_s < self.settle_s:
            return None
        closed = disconnections - self._reclaimed_disconnections
        if closed >= max(self.reclaim_min, self.reclaim_fraction * connected):
            self._reclaimed_disconnections = disconnections
            self._frozen_connections = connections
            return "reclaim"
        if connections != self._frozen_connections:
            self._frozen_connections = connections
            return "freeze"
        return None


def apply(action: FreezeAction) -> None:
    """Carry out one decision on this process's garbage collector."""
    if action == "freeze":
        gc.freeze()
        log.info("%d objects frozen for the garbage collector", gc.get_freeze_count())
        return
    started = time.perf_counter()
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    log.info(
        "reclaimed closed sessions: %d unreachable objects in %.0f ms, %d frozen",
        found,
        (time.perf_counter() - started) * 1000,
        gc.get_freeze_count(),
    )
