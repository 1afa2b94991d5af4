"""The pipeline's receiver is bounded: a full queue stops the socket, the broker holds the rest.

A real Mosquitto; two publishers push QoS 1 messages to the receiver's persistent session
while its consumer (whoever calls ``take``) is blocked. The receiver's queue must stop at
its bound with reading paused (TCP back-pressure), and once the consumer takes again every
message must arrive exactly as sent, in order per publisher, nothing dropped.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from gridflex.broker import Broker
from gridflex.mqtt_asyncio import AsyncMqttClient
from pipelines.mqtt_receiver import MqttReceiver, ReceiverSettings
from tests.pipelines.helpers import create_session

pytestmark = pytest.mark.integration

BOUND = 100
PUBLISHERS = 2
PER_PUBLISHER = 3_000
PAD = b"x" * 200


def _payload(publisher: int, seq: int) -> bytes:
    return f"{publisher}:{seq}:".encode() + PAD


async def _publish_all(url: str, topic_prefix: str) -> None:
    """Each publisher sends its messages in order and waits for every PUBACK."""
    clients = [
        AsyncMqttClient(url, f"bp-pub-{uuid.uuid4().hex[:8]}", clean_session=True)
        for _ in range(PUBLISHERS)
    ]
    for client in clients:
        await client.start()
        assert await client.wait_connected(10)
    for seq in range(PER_PUBLISHER):
        for index, client in enumerate(clients):
            assert client.publish(f"{topic_prefix}/p{index}", _payload(index, seq))
        if seq % 100 == 0:
            await asyncio.sleep(0)  # let the loop write and read PUBACKs
    for client in clients:
        assert await client.flush(30)
        await client.stop()


def _wait(condition: object, timeout_s: float = 20.0) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("durable", [False, True], ids=["ack-on-receipt", "durable-ack"])
def test_full_receive_queue_pauses_reading_and_every_message_arrives_in_order(
    mosquitto: Broker, tmp_path: Path, durable: bool
) -> None:
    prefix = f"t/bp-{uuid.uuid4().hex[:8]}"
    client_id = f"bp-recv-{uuid.uuid4().hex[:8]}"
    create_session(mosquitto.url, client_id, f"{prefix}/#")
    settings = ReceiverSettings(
        host=mosquitto.host,
        port=mosquitto.port,
        tls=False,
        client_id=client_id,
        topic_filters=(f"{prefix}/#",),
        receive_queue=BOUND,
        wal_dir=str(tmp_path / "wal") if durable else None,
    )
    receiver = MqttReceiver(settings)
    receiver.start()
    try:
        # The consumer is blocked: nobody calls take() while everything is published.
        asyncio.run(_publish_all(mosquitto.url, prefix))
        assert _wait(lambda: receiver.received >= BOUND)
        # Every message is with the broker (PUBACKed to the publishers); the receiver
        # holds exactly its bound and has stopped reading: the rest waits in the kernel's
        # buffers and the broker's session queue.
        assert receiver.read_pauses >= 1
        assert receiver.received == BOUND
        assert receiver.max_pending == BOUND

        got: list[bytes] = []
        batch_sizes: list[int] = []

        def drained() -> bool:
            batch, _through_ms = receiver.take()
            batch_sizes.append(len(batch))
            got.extend(payload for _topic, payload, _ms in batch)
            return len(got) >= PUBLISHERS * PER_PUBLISHER

        assert _wait(drained, 60), f"{len(got)} of {PUBLISHERS * PER_PUBLISHER} arrived"
    finally:
        receiver.stop()
    assert len(got) == PUBLISHERS * PER_PUBLISHER
    for index in range(PUBLISHERS):
        mine = [p for p in got if p.startswith(f"{index}:".encode())]
        assert mine == [_payload(index, seq) for seq in range(PER_PUBLISHER)]
    assert max(batch_sizes) <= BOUND
    assert receiver.max_pending <= BOUND
    assert receiver.read_pauses > 1  # paused again and again while it drained


def test_receive_queue_must_hold_at_least_one_message() -> None:
    with pytest.raises(ValueError, match="receive_queue"):
        ReceiverSettings(
            host="127.0.0.1",
            port=1,
            tls=False,
            client_id="x",
            topic_filters=("t",),
            receive_queue=0,
        )
