"""Each asset's mailbox in the control service: what its worker does next.

A :class:`Job` is a command (with a ``reply`` future when an operator waits for it), an
emergency stop, a re-application of the last command under new limits, or the watchdog
(no command came for too long). The
:class:`Mailbox` keeps them in arrival order, bounded: beyond ``limit`` the oldest waiting
dataflow command makes room (setpoints are absolute, the newer one supersedes it), while
an emergency stop goes to the front.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Literal

from gridflex.contract import DispatchAck, DispatchCommand

__all__ = ["Job", "Mailbox"]


@dataclass(slots=True)
class Job:
    """One thing for an asset's worker: a command (``reply`` for a manual one), a stop, ..."""

    kind: Literal["command", "stop", "reapply", "watchdog"]
    command: DispatchCommand | None = None
    manual: bool = False
    reply: asyncio.Future[DispatchAck] | None = None


class Mailbox:
    """An asset's bounded queue; an emergency stop goes to the front."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: deque[Job] = deque()
        self._ready = asyncio.Event()

    def put(self, job: Job) -> Job | None:
        """Queue ``job``; returns the oldest waiting command when it had to make room."""
        dropped = None
        if len(self.items) >= self.limit:
            for old in self.items:
                if old.kind == "command" and old.reply is None:
                    dropped = old
                    break
            if dropped is not None:
                self.items.remove(dropped)
        self.items.append(job)
        self._ready.set()
        return dropped

    def put_front(self, job: Job) -> None:
        """Queue ``job`` ahead of everything waiting (an emergency stop)."""
        self.items.appendleft(job)
        self._ready.set()

    async def next(self) -> Job:
        """The next job, waiting as long as it takes (no timer: the watchdog is a sweep)."""
        while not self.items:
            self._ready.clear()
            await self._ready.wait()
        return self.items.popleft()

    async def get(self, timeout_s: float) -> Job | None:
        """The next job, or None after ``timeout_s`` without one."""
        if not self.items:
            self._ready.clear()
            try:
                async with asyncio.timeout(timeout_s):  # no task per wait, unlike wait_for
                    await self._ready.wait()
            except TimeoutError:
                return None
        return self.items.popleft()
