"""An asyncio event loop on its own thread, for asyncio clients used from threaded code.

The pipeline's MQTT sink runs the native asyncio MQTT client this way: Bytewax calls the
sink from its worker thread, the client lives on the loop thread, and the two meet only
through :meth:`LoopThread.call` (fire and forget) and :meth:`LoopThread.run` (wait).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running in a daemon thread (started at construction)."""

    def __init__(self, name: str = "asyncio-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        """Run ``coro`` on the loop and wait for its result (at most ``timeout_s``)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def call(self, fn: Callable[..., object], *args: object) -> None:
        """Schedule ``fn(*args)`` on the loop; do not wait."""
        self.loop.call_soon_threadsafe(fn, *args)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the loop, join the thread, close the loop."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.loop.close()
