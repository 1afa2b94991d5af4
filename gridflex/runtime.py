"""What every long-running ``gridflex`` command does the same way at its edges."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable

__all__ = ["cancel_and_wait", "stop_on_signals"]


def stop_on_signals() -> asyncio.Event:
    """An event the running loop sets on SIGINT or SIGTERM: the command's clean stop.

    Call it from a coroutine on the loop that should see the signals (the main thread's).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[object]], log: logging.Logger, *, repeat_s: float = 0.5
) -> None:
    """Cancel ``tasks`` and wait until every one has ended; log, never raise, their errors.

    A stop runs in ``finally`` clauses, where raising would hide the error that brought the
    process down, so an exception a task ended with is logged (with its traceback) instead.
    The cancellation is repeated every ``repeat_s`` for a task still running: Python
    3.11's ``asyncio.wait_for`` can swallow a cancellation that races with its result.
    """
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=repeat_s)
    for task in tasks:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task %s ended with an error", task.get_name(), exc_info=exc)
