"""No loss across a broker restart (issue 9 point 2), with the project's own MQTT client.

A publisher (as the collectors: QoS 1, a bounded queue while the broker is away) keeps
going while Mosquitto, with persistence as the demo runs it, is stopped and started again
on the same port, and the consumer (as the pipeline: a persistent session) is away across
the restart: every message published arrives once it is back (QoS 1 may deliver one
twice, never lose one); the messages published while it was away are only in its session,
which the broker's persistence carried across the restart.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gridflex.broker import start_broker
from gridflex.mqtt_asyncio import AsyncMqttClient

pytestmark = pytest.mark.integration

TOPIC = "gridflex/v1/restart/inverter/a/telemetry"


def test_a_broker_restart_loses_no_message(tmp_path: Path) -> None:
    store = tmp_path / "mosquitto"
    store.mkdir()
    broker = start_broker(persistence_dir=store)
    port = broker.port
    received: set[int] = set()

    def consumer() -> AsyncMqttClient:
        client = AsyncMqttClient(
            broker.url, "restart-consumer", clean_session=False, reconnect_max_s=0.5
        )
        client.subscribe(TOPIC, lambda _t, p: received.add(int(p)), qos=1)
        return client

    async def scenario() -> tuple[int, int]:
        nonlocal broker
        reader = consumer()
        publisher = AsyncMqttClient(
            broker.url, "restart-publisher", clean_session=False, reconnect_max_s=0.5
        )
        await reader.start()
        await publisher.start()
        assert await reader.wait_connected(10.0) and await publisher.wait_connected(10.0)
        await asyncio.sleep(0.3)  # the SUBACK: the session now holds the subscription
        sent = 0

        async def publish_for(seconds: float) -> None:
            nonlocal sent
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                publisher.publish(TOPIC, str(sent).encode(), qos=1)
                sent += 1
                await asyncio.sleep(0.01)

        await publish_for(1.0)
        await reader.stop()  # the consumer goes away too (its session stays at the broker)
        broker.stop()  # SIGTERM: Mosquitto writes its sessions and queued messages
        await publish_for(1.0)  # the broker is away: the publisher queues
        broker = start_broker(port=port, persistence_dir=store)
        await publish_for(1.0)  # only the consumer's restored session keeps these
        assert await publisher.flush(10.0)  # every message the broker has, before the reader
        await asyncio.sleep(0.5)
        reader = consumer()  # back, with the same client id: the queued messages arrive
        await reader.start()
        deadline = time.monotonic() + 20
        while len(received) < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await publisher.stop()
        await reader.stop()
        return sent, publisher.stats.as_dict()["dropped"]

    try:
        sent, dropped = asyncio.run(scenario())
    finally:
        broker.stop()
    assert dropped == 0
    assert sorted(received) == list(range(sent))
