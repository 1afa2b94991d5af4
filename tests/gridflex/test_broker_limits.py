"""The per-client queue limits every Mosquitto configuration we write sets deliberately."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from gridflex.broker import anonymous_conf, start_broker
from gridflex.broker_config import (
    ENVELOPE_OUTAGE_S,
    ENVELOPE_RATE_PER_S,
    BrokerLimits,
    write_broker_config,
)
from gridflex.mqtt_asyncio import AsyncMqttClient
from tests.pipelines.helpers import create_session

#: 1,000 assets x 5 messages a second for a minute: what a consumer away may find waiting.
ENVELOPE_MESSAGES = 1_000 * 5 * 60


def _settings(text: str) -> dict[str, str]:
    pairs = (line.split(None, 1) for line in text.splitlines() if line and line[0] != "#")
    return {key: value for key, value in (p for p in pairs if len(p) == 2)}


def test_default_limits_hold_the_documented_envelope() -> None:
    limits = BrokerLimits()
    assert ENVELOPE_RATE_PER_S * ENVELOPE_OUTAGE_S == ENVELOPE_MESSAGES
    assert limits.max_queued_messages >= ENVELOPE_MESSAGES
    # ~400-byte telemetry: the byte limit must not bind before the message count does.
    assert limits.max_queued_bytes >= ENVELOPE_MESSAGES * 800
    assert limits.max_inflight_messages > 0


@pytest.mark.parametrize("writer", ["broker-config", "test-broker"])
def test_every_written_config_sets_the_queue_limits(tmp_path: Path, writer: str) -> None:
    if writer == "broker-config":
        conf = write_broker_config("s1", tmp_path, bind="127.0.0.1", port=1883).conf
        text = conf.read_text(encoding="utf-8")
    else:
        text = anonymous_conf("127.0.0.1", 1883)
    settings = _settings(text)
    limits = BrokerLimits()
    assert settings["max_queued_messages"] == str(limits.max_queued_messages)
    assert settings["max_queued_bytes"] == str(limits.max_queued_bytes)
    assert settings["max_inflight_messages"] == str(limits.max_inflight_messages)
    assert settings["max_queued_messages"] != "0"  # never unbounded


@pytest.mark.integration
def test_a_session_keeps_its_backlog_up_to_the_limit_and_drops_the_newest_past_it() -> None:
    """What Mosquitto does at ``max_queued_messages`` (documented in operations.md)."""
    broker = start_broker(limits=BrokerLimits(max_queued_messages=50))
    topic = f"t/limit-{uuid.uuid4().hex[:8]}"
    client_id = f"limit-sub-{uuid.uuid4().hex[:8]}"
    try:
        create_session(broker.url, client_id, topic)  # subscribed, then away

        async def scenario() -> list[int]:
            pub = AsyncMqttClient(broker.url, f"limit-pub-{uuid.uuid4().hex[:8]}")
            await pub.start()
            assert await pub.wait_connected(10)
            for i in range(80):
                pub.publish(topic, str(i).encode())
            assert await pub.flush(10)  # the broker accepted all 80
            await pub.stop()
            got: list[int] = []
            sub = AsyncMqttClient(broker.url, client_id, clean_session=False)
            sub.subscribe(topic, lambda _t, p: got.append(int(p)))
            await sub.start()
            assert await sub.wait_connected(10)
            deadline = time.monotonic() + 10
            while len(got) < 50 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            marker = AsyncMqttClient(broker.url, f"limit-mark-{uuid.uuid4().hex[:8]}")
            await marker.start()
            marker.publish(topic, b"-1")  # after the backlog: once it is here, all is here
            assert await marker.flush(10)
            await marker.stop()
            while -1 not in got and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await sub.stop()
            return got

        got = asyncio.run(scenario())
    finally:
        broker.stop()
    assert got == [*range(50), -1]
