"""Drops are never silent: a collector's retained presence carries its MQTT drop count.

The Modbus collector runs on a real Mosquitto with a small outgoing queue; the broker is
stopped, more is published than the queue holds, the broker comes back: the log says how
many messages were dropped during the outage, and the collector's retained
``collector/1`` presence carries the cumulative count as ``mqtt_dropped``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path

import pytest

from collectors.modbus.poller import COMPONENT, run
from gridflex.broker import start_broker
from gridflex.config import parse_site
from gridflex.contract import CollectorStatus, collector_topic, parse_payload
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.net import free_port

pytestmark = pytest.mark.integration

QUEUE_LIMIT = 10
FILLER = 30


def test_collector_presence_carries_the_messages_dropped_during_an_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "mosquitto"
    store.mkdir()
    broker = start_broker(persistence_dir=store)
    port = broker.port
    site = parse_site(
        {
            "site": {"id": f"d{uuid.uuid4().hex[:8]}"},
            "mqtt": {"url": broker.url},
            "modbus": {"poll_interval_ms": 200, "timeout_s": 0.3, "backoff_initial_s": 5.0},
            "assets": [  # nobody listens there: the device stays offline, quietly
                {"id": "inv1", "kind": "inverter", "host": "127.0.0.1", "port": free_port()}
                | {"max_charge_w": 10_000.0, "max_discharge_w": 10_000.0}
            ],
        }
    )
    topic = collector_topic(site.id, COMPONENT)

    async def scenario() -> tuple[int, list[CollectorStatus]]:
        nonlocal broker
        client = AsyncMqttClient(
            broker.url, f"drops-{site.id}", queue_limit=QUEUE_LIMIT, reconnect_max_s=0.5
        )
        await client.start()
        assert await client.wait_connected(10)
        stop = asyncio.Event()
        collector = asyncio.create_task(run(site, client, stop))
        assert await client.flush(10)
        broker.stop()
        deadline = time.monotonic() + 10
        while client.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for i in range(FILLER):  # more than the queue holds while the broker is away
            client.publish(f"gridflex/v1/{site.id}/filler", str(i).encode())
        broker = start_broker(port=port, persistence_dir=store)
        assert await client.wait_connected(20)
        dropped = client.stats.as_dict()["dropped"]

        presences: list[CollectorStatus] = []

        def on_presence(_topic: str, payload: bytes) -> None:
            status = parse_payload(payload)
            assert isinstance(status, CollectorStatus)
            presences.append(status)

        watcher = AsyncMqttClient(broker.url, f"drops-watch-{site.id}", clean_session=True)
        watcher.subscribe(topic, on_presence)
        await watcher.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
            p.online and p.mqtt_dropped == dropped for p in presences
        ):
            await asyncio.sleep(0.05)
        stop.set()
        await collector
        await client.stop()
        await watcher.stop()
        return dropped, presences

    with caplog.at_level(logging.WARNING, logger="gridflex.mqtt_asyncio"):
        try:
            dropped, presences = asyncio.run(scenario())
        finally:
            broker.stop()
    assert dropped >= FILLER - QUEUE_LIMIT
    assert any(p.online and p.mqtt_dropped == dropped for p in presences)
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        f"dropped {dropped} messages while the broker was unreachable for" in m for m in messages
    )
    assert sum("outgoing queue full" in m for m in messages) == 1
