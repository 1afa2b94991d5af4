"""The native client's bounds: drop-oldest publishing and receive flow control."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest

from gridflex.broker import Broker
from gridflex.mqtt_asyncio import AsyncMqttClient


def test_full_queue_drops_the_oldest_queued_and_counts_each_drop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = AsyncMqttClient("mqtt://127.0.0.1:1", "flow-unit", queue_limit=3)
    with caplog.at_level(logging.WARNING, logger="gridflex.mqtt_asyncio"):
        accepted = [client.publish("t/x", str(i).encode()) for i in range(5)]
    assert accepted == [True] * 5
    assert [payload for _h, _t, payload in client._queue] == [b"2", b"3", b"4"]
    stats = client.stats.as_dict()
    assert stats["dropped"] == 2
    assert client.pending() == 3  # the dropped ones are not waited for
    first_drop = [r for r in caplog.records if "outgoing queue full" in r.getMessage()]
    assert len(first_drop) == 1  # once per outage, not once per message
    assert "broker unreachable" in first_drop[0].getMessage()


def test_qos0_while_disconnected_is_dropped_and_counted() -> None:
    client = AsyncMqttClient("mqtt://127.0.0.1:1", "flow-unit-q0")
    assert client.publish("t/x", b"a", qos=0) is False
    assert client.stats.as_dict()["dropped"] == 1
    assert client.pending() == 0


@pytest.mark.integration
def test_paused_reading_holds_messages_across_keepalives_then_hands_all_over(
    mosquitto: Broker,
) -> None:
    """Paused for several keepalive periods: the connection stays, nothing is lost."""
    topic = f"t/flow-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[int, int, dict[str, int], list[bytes]]:
        received: list[bytes] = []
        sub = AsyncMqttClient(mosquitto.url, f"flow-sub-{uuid.uuid4().hex[:8]}", keepalive_s=1)

        def on_message(_topic: str, payload: bytes) -> None:
            received.append(payload)
            sub.pause_reading()  # a consumer that takes one message, then stalls

        sub.subscribe(topic, on_message)
        await sub.start()
        assert await sub.wait_subscribed(10)
        pub = AsyncMqttClient(mosquitto.url, f"flow-pub-{uuid.uuid4().hex[:8]}")
        await pub.start()
        assert await pub.wait_connected(10)
        for i in range(200):
            pub.publish(topic, str(i).encode())
        assert await pub.flush(10)
        await pub.stop()
        await asyncio.sleep(3.5)  # three keepalive periods with PINGRESPs unread
        while_paused = len(received)
        disconnects = sub.stats.as_dict()["disconnects"]
        deadline = time.monotonic() + 20
        while len(received) < 200 and time.monotonic() < deadline:
            sub.resume_reading()  # the consumer takes one more, then stalls again
            await asyncio.sleep(0.001)
        stats = sub.stats.as_dict()
        await sub.stop()
        return while_paused, disconnects, stats, received

    while_paused, disconnects, stats, received = asyncio.run(scenario())
    assert while_paused == 1
    assert disconnects == 0
    assert received == [str(i).encode() for i in range(200)]
    assert stats["read_pauses"] == 200
