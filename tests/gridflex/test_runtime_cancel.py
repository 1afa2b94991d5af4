"""``cancel_and_wait``: every task ends, errors are logged, none escapes the stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gridflex.runtime import cancel_and_wait

log = logging.getLogger("test.runtime")


async def _forever() -> None:
    await asyncio.Event().wait()


async def _swallows_one_cancel(swallowed: list[bool]) -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        swallowed.append(True)  # as a racing ``wait_for`` may: the task goes on
    await asyncio.Event().wait()


async def _fails() -> None:
    raise RuntimeError("broken worker")


def test_running_tasks_are_cancelled_and_awaited() -> None:
    async def scenario() -> list[asyncio.Task[None]]:
        tasks = [asyncio.create_task(_forever()) for _ in range(3)]
        await asyncio.sleep(0)
        await cancel_and_wait(tasks, log)
        return tasks

    tasks = asyncio.run(scenario())
    assert all(t.cancelled() for t in tasks)


def test_a_swallowed_cancellation_is_repeated_until_the_task_ends() -> None:
    swallowed: list[bool] = []

    async def scenario() -> asyncio.Task[None]:
        task = asyncio.create_task(_swallows_one_cancel(swallowed))
        await asyncio.sleep(0)
        await cancel_and_wait([task], log, repeat_s=0.01)
        return task

    task = asyncio.run(scenario())
    assert swallowed == [True]
    assert task.cancelled()


def test_a_task_that_failed_is_logged_with_its_error_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        failed = asyncio.create_task(_fails(), name="worker-7")
        running = asyncio.create_task(_forever())
        await asyncio.sleep(0)
        await cancel_and_wait([failed, running], log)

    with caplog.at_level(logging.ERROR, logger="test.runtime"):
        asyncio.run(scenario())
    [record] = caplog.records
    assert "worker-7" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
