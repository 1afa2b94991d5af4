"""The stream hub: every subscriber gets every message; a slow one loses its oldest."""

from __future__ import annotations

import asyncio

import pytest

from control.api import StreamHub


def _msg(i: int) -> tuple[str, bytes]:
    return (f"gridflex/v1/s/inverter/inv-{i:03d}/telemetry", b"{}")


def test_every_subscriber_gets_every_message_in_order() -> None:
    async def scenario() -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
        hub = StreamHub()
        a, b = hub.subscribe(), hub.subscribe()
        for i in range(5):
            hub.publish(*_msg(i))
        return [await anext(a) for _ in range(5)], [await anext(b) for _ in range(5)]

    got_a, got_b = asyncio.run(scenario())
    assert got_a == got_b == [_msg(i) for i in range(5)]


def test_a_subscription_sees_only_what_is_published_after_it() -> None:
    async def scenario() -> tuple[str, bytes]:
        hub = StreamHub()
        hub.publish(*_msg(0))
        sub = hub.subscribe()
        hub.publish(*_msg(1))
        return await anext(sub)

    assert asyncio.run(scenario()) == _msg(1)


def test_a_slow_subscriber_loses_its_oldest_messages_and_blocks_nobody() -> None:
    async def scenario() -> tuple[list[tuple[str, bytes]], int]:
        hub = StreamHub(queue_size=3)
        slow = hub.subscribe()
        for i in range(10):
            hub.publish(*_msg(i))  # never blocks, whatever the subscriber does
        return [await anext(slow) for _ in range(3)], hub.dropped

    got, dropped = asyncio.run(scenario())
    assert got == [_msg(7), _msg(8), _msg(9)]
    assert dropped == 7


def test_closing_a_subscription_unsubscribes() -> None:
    async def scenario() -> tuple[int, int]:
        hub = StreamHub()
        sub = hub.subscribe()
        before = hub.subscribers
        await sub.aclose()
        hub.publish(*_msg(0))
        with pytest.raises(StopAsyncIteration):
            await anext(sub)
        return before, hub.subscribers

    assert asyncio.run(scenario()) == (1, 0)


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        StreamHub(queue_size=0)
