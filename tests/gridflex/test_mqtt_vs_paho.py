"""The native MQTT client against paho as the reference, over a real Mosquitto.

The commands publish with the native asyncio client (``gridflex.mqtt_asyncio``); paho
(``gridflex.mqtt``) is the oracle and the benchmarks' baseline. The same sequence of
publishes (payload sizes across the remaining-length encoding's boundaries, binary and
empty payloads, non-ASCII topics) is sent once through each, both made by the same
``MqttClientFactory`` seam the commands use (paho behind ``bench.baselines``' adapter), and
received by a native and a paho subscriber: all four streams must be the sequence sent.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from bench.baselines import PahoAsyncClient
from gridflex.broker import Broker
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.mqtt_factory import MqttClientFactory
from tests.mqtt_helpers import Subscriber

pytestmark = pytest.mark.integration

#: Payload sizes around the remaining length's 1/2/3-byte boundaries (127, 16383).
SIZES = (0, 1, 100, 127, 128, 16_000, 16_383, 16_384, 70_000)


def _sequence(prefix: str) -> list[tuple[str, bytes]]:
    messages = []
    for i, size in enumerate(SIZES):
        payload = bytes((i * 31 + k) % 256 for k in range(size))
        messages.append((f"{prefix}/s{size}", payload))
    messages.append((f"{prefix}/ünïcode/€", "grüße €".encode()))
    messages += [(f"{prefix}/burst", b"%d" % i) for i in range(200)]
    return messages


async def _publish_and_receive(
    url: str, factory: MqttClientFactory, prefix: str, sent: list[tuple[str, bytes]]
) -> list[tuple[str, bytes]]:
    """Publish ``sent`` through ``factory``'s client; what a native subscriber received."""
    got: list[tuple[str, bytes]] = []
    sub = AsyncMqttClient(url, f"t-oracle-sub-{uuid.uuid4().hex[:8]}", clean_session=True)
    sub.subscribe(f"{prefix}/#", lambda t, p: got.append((t, p)))
    await sub.start()
    assert await sub.wait_connected(10)
    assert await sub.wait_subscribed(10)
    pub = factory(url, f"t-oracle-pub-{uuid.uuid4().hex[:8]}", max_inflight=0)
    await pub.start()
    assert await pub.wait_connected(10)
    try:
        for topic, payload in sent:
            assert pub.publish(topic, payload, qos=1)
        deadline = time.monotonic() + 15
        while len(got) < len(sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        await pub.stop(flush_timeout_s=5.0)
        await sub.stop()
    return got


@pytest.mark.parametrize(
    "factory", [AsyncMqttClient, PahoAsyncClient], ids=["native", "paho-oracle"]
)
def test_the_same_publishes_arrive_identically_at_native_and_paho_subscribers(
    mosquitto: Broker, factory: MqttClientFactory
) -> None:
    prefix = f"t/oracle-{uuid.uuid4().hex[:6]}"
    sent = _sequence(prefix)
    with Subscriber(mosquitto.url, f"{prefix}/#") as paho_sub:
        native_got = asyncio.run(_publish_and_receive(mosquitto.url, factory, prefix, sent))
        assert paho_sub.wait_for(lambda m: len(m) >= len(sent))
        time.sleep(0.2)  # nothing more may come
        paho_got = list(paho_sub.messages)
    assert native_got == sent
    assert paho_got == sent
