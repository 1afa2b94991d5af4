"""The asyncio-driven MQTT client against a real Mosquitto: delivery, will, bounded queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from gridflex.broker import Broker, start_broker
from gridflex.mqtt_asyncio import AsyncMqttClient
from tests.mqtt_helpers import Subscriber

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


async def _until(condition: object, timeout_s: float = 10.0) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def test_published_messages_arrive_once_in_order(mosquitto: Broker) -> None:
    async def publish_all() -> dict[str, int]:
        pub = AsyncMqttClient(mosquitto.url, "test-aio-order-pub")
        await pub.start()
        assert await pub.wait_connected(10)
        for i in range(500):
            assert pub.publish("t/aio-order", str(i).encode())
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the loop write and read acks mid-stream
        assert await pub.flush(10)
        stats = pub.stats.as_dict()
        await pub.stop()
        return stats

    with Subscriber(mosquitto.url, "t/aio-order") as sub:
        stats = asyncio.run(publish_all())
        assert sub.wait_for(lambda m: len(m) >= 500)
        assert [int(p) for _t, p in sub.messages] == list(range(500))
    assert (stats["published"], stats["acknowledged"], stats["dropped"]) == (500, 500, 0)


def test_subscription_callbacks_run_on_the_loop_thread(mosquitto: Broker) -> None:
    async def scenario() -> tuple[list[bytes], set[int], int]:
        got: list[bytes] = []
        threads: set[int] = set()
        client = AsyncMqttClient(mosquitto.url, "test-aio-sub", clean_session=True)

        def on_message(_topic: str, payload: bytes) -> None:
            threads.add(threading.get_ident())
            got.append(payload)

        client.subscribe("t/aio-sub", on_message)
        await client.start()
        assert await client.wait_connected(10)
        await asyncio.sleep(0.1)  # SUBACK
        client.publish("t/aio-sub", b"hello")
        assert await _until(lambda: got)
        await client.stop()
        return got, threads, threading.get_ident()

    got, threads, loop_thread = asyncio.run(scenario())
    assert got == [b"hello"]
    assert threads == {loop_thread}


def test_shared_subscription_delivers_to_its_callback(mosquitto: Broker) -> None:
    async def scenario() -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        client = AsyncMqttClient(mosquitto.url, "test-aio-share", clean_session=True)
        client.subscribe("$share/g1/t/aio-share/+", lambda t, p: got.append((t, p)))
        await client.start()
        assert await client.wait_connected(10)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            client.publish("t/aio-share/a", b"x")  # until the SUBACK is in, one may pass
            await asyncio.sleep(0.1)
        await client.stop()
        return got

    got = asyncio.run(scenario())
    assert got and got[0] == ("t/aio-share/a", b"x")


def test_clean_stop_does_not_fire_the_last_will(mosquitto: Broker) -> None:
    async def scenario() -> None:
        client = AsyncMqttClient(
            mosquitto.url, "test-aio-clean", will=("t/aio-clean", b'{"online": false}')
        )
        await client.start()
        assert await client.wait_connected(10)
        client.publish("t/aio-clean", b'{"online": true}', retain=True)
        await client.stop()
        assert not client.connected

    asyncio.run(scenario())
    with Subscriber(mosquitto.url, "t/aio-clean") as late:
        assert late.wait_for(lambda m: len(m) >= 1)
        time.sleep(0.3)  # a will would arrive after the retained message
        assert [json.loads(p) for _t, p in late.messages] == [{"online": True}]


def test_last_will_marks_a_killed_process_offline(mosquitto: Broker) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from gridflex.mqtt_asyncio import AsyncMqttClient

        async def main():
            c = AsyncMqttClient({mosquitto.url!r}, "test-aio-will", keepalive_s=5,
                                will=("t/aio-will", b'{{"online": false}}'))
            await c.start()
            await c.wait_connected(10)
            c.publish("t/aio-will", b'{{"online": true}}', retain=True)
            await c.flush(5)
            print("ready", flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        with Subscriber(mosquitto.url, "t/aio-will") as sub:
            assert sub.wait_for(lambda m: any(b"true" in p for _t, p in m))
            os.kill(proc.pid, signal.SIGKILL)
            assert sub.wait_for(lambda m: json.loads(m[-1][1]) == {"online": False}, 20)
    finally:
        proc.kill()
        proc.wait()


def test_full_queue_drops_the_oldest_while_the_broker_is_down_and_drains_on_reconnect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "mosquitto-store"
    store.mkdir()
    brokers = [start_broker("mosquitto", persistence_dir=store)]
    port = brokers[0].port

    async def scenario() -> tuple[list[bool], dict[str, int], list[bytes]]:
        url = brokers[0].url
        # A subscriber with a persistent session: the broker keeps what it misses.
        sub_client = AsyncMqttClient(url, "test-aio-queue-sub", clean_session=False)
        received: list[bytes] = []
        sub_client.subscribe("t/aio-queue", lambda _t, p: received.append(p))
        await sub_client.start()
        assert await sub_client.wait_connected(10)
        await asyncio.sleep(0.1)  # SUBACK
        await sub_client.stop()  # offline: the broker queues for it

        pub = AsyncMqttClient(url, "test-aio-queue-pub", queue_limit=50, reconnect_max_s=1.0)
        await pub.start()
        assert await pub.wait_connected(10)
        brokers[0].stop()
        assert await _until(lambda: not pub.connected)
        accepted = [pub.publish("t/aio-queue", str(i).encode()) for i in range(80)]
        stats = pub.stats.as_dict()

        brokers.append(start_broker("mosquitto", port=port, persistence_dir=store))
        assert await pub.wait_connected(20)  # reconnected by the client's own backoff
        assert await pub.flush(10)
        await pub.stop()

        sub_client = AsyncMqttClient(url, "test-aio-queue-sub", clean_session=False)
        sub_client.subscribe("t/aio-queue", lambda _t, p: received.append(p))
        await sub_client.start()
        assert await _until(lambda: len(received) >= 50)
        await sub_client.stop()
        return accepted, stats, received

    try:
        accepted, stats, received = asyncio.run(scenario())
    finally:
        for broker in brokers:
            broker.stop()
    # Every publish was accepted; the 30 oldest made room for the newest (never silent).
    assert accepted == [True] * 80
    assert stats["dropped"] == 30
    assert stats["published"] - stats["acknowledged"] == 50  # pending() counts the kept
    assert [int(p) for p in received] == list(range(30, 80))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("outgoing queue full" in m and "dropping the oldest" in m for m in warnings)
    assert any("dropped 30 messages while the broker was unreachable" in m for m in warnings)


def test_stop_before_the_broker_was_ever_reached_returns() -> None:
    async def scenario() -> bool:
        client = AsyncMqttClient("mqtt://127.0.0.1:1", "test-aio-nobroker", reconnect_max_s=0.5)
        await client.start()
        connected = await client.wait_connected(0.3)
        await client.stop()
        return connected

    assert asyncio.run(scenario()) is False


# ---------------------------------------------------------------- a scripted broker
# The cases below need a broker that misbehaves on cue (withholds PUBACKs, drops the
# connection, never answers a ping, refuses a login): a small asyncio server speaking just
# enough MQTT, over real loopback sockets.


class ScriptedBroker:
    """Accepts connections; records each PUBLISH as ``(connection no, first byte, mid)``."""

    def __init__(self, *, ack: bool = True, pong: bool = True, connack_code: int = 0) -> None:
        self.ack = ack
        self.pong = pong
        self.connack_code = connack_code
        self.connections = 0
        self.publishes: list[tuple[int, int, int]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self.writers:
            writer.close()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def drop_connections(self) -> None:
        for writer in self.writers:
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.writers.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                first = (await reader.readexactly(1))[0]
                length, shift = 0, 0
                while True:
                    digit = (await reader.readexactly(1))[0]
                    length |= (digit & 0x7F) << shift
                    shift += 7
                    if digit < 0x80:
                        break
                body = await reader.readexactly(length)
                kind = first >> 4
                if kind == 1:  # CONNECT
                    writer.write(bytes((0x20, 2, 0, self.connack_code)))
                elif kind == 3:  # PUBLISH at QoS 1: topic, then the packet id
                    size = int.from_bytes(body[:2], "big")
                    mid = int.from_bytes(body[2 + size : 4 + size], "big")
                    self.publishes.append((number, first, mid))
                    if self.ack:
                        writer.write(b"\x40\x02" + mid.to_bytes(2, "big"))
                elif kind == 12 and self.pong:  # PINGREQ
                    writer.write(b"\xd0\x00")
                await writer.drain()


def test_unacknowledged_messages_are_resent_with_dup_and_same_id_after_reconnect() -> None:
    async def scenario() -> tuple[list[tuple[int, int, int]], int]:
        async with ScriptedBroker(ack=False) as broker:
            client = AsyncMqttClient(broker.url, "t-resend", reconnect_min_s=0.05)
            await client.start()
            assert await client.wait_connected(5)
            for i in range(3):
                client.publish("t/resend", str(i).encode())
            assert await _until(lambda: len(broker.publishes) == 3)
            broker.ack = True
            broker.drop_connections()
            assert await _until(lambda: broker.connections == 2 and client.pending() == 0)
            sent = list(broker.publishes)
            await client.stop()
            return sent, client.stats.as_dict()["acknowledged"]

    sent, acknowledged = asyncio.run(scenario())
    first = [(first_byte, mid) for conn, first_byte, mid in sent if conn == 1]
    again = [(first_byte, mid) for conn, first_byte, mid in sent if conn == 2]
    assert [b & 0x08 for b, _mid in first] == [0, 0, 0]
    assert again == [(b | 0x08, mid) for b, mid in first]  # DUP set, same ids, same order
    assert acknowledged == 3


def test_in_flight_window_holds_the_rest_until_acknowledged() -> None:
    async def scenario() -> tuple[int, int]:
        async with ScriptedBroker(ack=False) as broker:
            client = AsyncMqttClient(broker.url, "t-window", max_inflight=4)
            await client.start()
            assert await client.wait_connected(5)
            for i in range(10):
                assert client.publish("t/window", str(i).encode())
            await asyncio.sleep(0.3)
            held_back = len(broker.publishes)
            broker.ack = True
            broker.drop_connections()  # the re-sent four get PUBACKs, then the rest flow
            assert await client.flush(5)
            await client.stop()
            return held_back, len({mid for _c, _b, mid in broker.publishes})

    held_back, distinct = asyncio.run(scenario())
    assert held_back == 4
    assert distinct == 10


def test_missing_pingresp_closes_the_connection_and_reconnects() -> None:
    async def scenario() -> int:
        async with ScriptedBroker(pong=False) as broker:
            client = AsyncMqttClient(broker.url, "t-ping", keepalive_s=1, reconnect_min_s=0.05)
            await client.start()
            assert await client.wait_connected(5)
            assert await _until(lambda: broker.connections >= 2, 10)
            await client.stop()
            return client.stats.as_dict()["disconnects"]

    assert asyncio.run(scenario()) >= 1


def test_refused_login_is_never_reported_as_connected() -> None:
    async def scenario() -> tuple[bool, int]:
        async with ScriptedBroker(connack_code=5) as broker:
            client = AsyncMqttClient(broker.url, "t-refused", reconnect_min_s=0.05)
            await client.start()
            connected = await client.wait_connected(0.5)
            tries = broker.connections
            await client.stop()
            return connected, tries

    connected, tries = asyncio.run(scenario())
    assert connected is False
    assert tries >= 2  # refused, then retried with backoff


def test_a_stopped_client_connects_again_when_restarted() -> None:
    async def scenario() -> tuple[bool, bool, int]:
        async with ScriptedBroker() as broker:
            client = AsyncMqttClient(broker.url, "t-restart")
            await client.start()
            first = await client.wait_connected(5)
            await client.stop()
            await client.start()
            second = await client.wait_connected(5)
            await client.stop()
            return first, second, broker.connections

    assert asyncio.run(scenario()) == (True, True, 2)
