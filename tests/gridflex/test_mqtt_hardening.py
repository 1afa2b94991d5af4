"""The asyncio MQTT client against a broker that misbehaves: each case of issue 9 point 7.

A fake broker over real loopback sockets sends what a test tells it to (a truncated packet
after a valid PUBACK, a 256 MB length, a topic that is not UTF-8, SUBACK 0x80, a lost
session); the lost session and the invalid filter are also checked against a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gridflex.broker import Broker, start_broker
from gridflex.mqtt import MqttClient
from gridflex.mqtt_asyncio import (
    AsyncMqttClient,
    MqttClientError,
    SessionLost,
    SubscriptionRefused,
)
from gridflex.mqtt_wire import encode_puback, encode_publish, encode_varint

pytestmark = pytest.mark.integration


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def raw_publish(topic: bytes, payload: bytes, *, mid: int = 0) -> bytes:
    """A PUBLISH packet with any topic bytes (QoS 1 when ``mid``), as a broker would send."""
    header = 0x32 if mid else 0x30
    return encode_publish(header, len(topic).to_bytes(2, "big") + topic, payload, mid)


class FakeBroker:
    """Speaks just enough MQTT 3.1.1 on a loopback port and writes what the test asks.

    CONNECT gets a CONNACK with ``session_present``; SUBSCRIBE a SUBACK with the code in
    ``suback_codes`` (default: the QoS asked) unless ``answer_subscribe`` is False; QoS 1
    PUBLISH a PUBACK while ``ack`` is True. ``send(data)`` writes raw bytes to the latest
    connection.
    """

    def __init__(self, *, ack: bool = True, session_present: bool = False) -> None:
        self.ack = ack
        self.session_present = session_present
        self.answer_subscribe = True
        self.suback_codes: dict[str, int] = {}
        self.connections = 0
        self.closed_by_client = 0
        self.publishes: list[tuple[int, int]] = []  # (connection no, packet id)
        self.subscribes: list[tuple[int, int, list[str]]] = []  # (connection, mid, filters)
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FakeBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    async def send(self, data: bytes) -> None:
        writer = self._writers[-1]
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self._writers.append(writer)
        try:
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
                self._answer(number, first, body, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client += 1

    def _answer(self, number: int, first: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        kind = first >> 4
        if kind == 1:  # CONNECT
            writer.write(bytes((0x20, 2, int(self.session_present), 0)))
        elif kind == 3 and first & 0x06:  # PUBLISH at QoS 1: topic, then the packet id
            size = int.from_bytes(body[:2], "big")
            mid = int.from_bytes(body[2 + size : 4 + size], "big")
            self.publishes.append((number, mid))
            if self.ack:
                writer.write(encode_puback(mid))
        elif kind == 8:  # SUBSCRIBE: packet id, then (filter, QoS) pairs
            mid = int.from_bytes(body[:2], "big")
            filters, codes, pos = [], bytearray(), 2
            while pos < len(body):
                size = int.from_bytes(body[pos : pos + 2], "big")
                topic_filter = body[pos + 2 : pos + 2 + size].decode()
                filters.append(topic_filter)
                codes.append(self.suback_codes.get(topic_filter, body[pos + 2 + size]))
                pos += 3 + size
            self.subscribes.append((number, mid, filters))
            if self.answer_subscribe:
                writer.write(b"\x90" + encode_varint(2 + len(codes)) + body[:2] + codes)
        elif kind == 12:  # PINGREQ
            writer.write(b"\xd0\x00")


# ---------------------------------------------------------------- malformed and truncated


def test_truncated_packet_after_a_valid_puback_closes_cleanly_and_keeps_counts_exact() -> None:
    async def scenario() -> tuple[dict[str, int], int, list[tuple[int, int]]]:
        async with FakeBroker(ack=False) as broker:
            client = AsyncMqttClient(broker.url, "t-trunc", reconnect_min_s=0.05)
            await client.start()
            assert await client.wait_connected(5)
            for i in range(3):
                client.publish("t/trunc", str(i).encode())
            assert await until(lambda: len(broker.publishes) == 3)
            first_mid = broker.publishes[0][1]
            # One read: a valid PUBACK, then a QoS 1 PUBLISH whose body stops in its topic.
            await broker.send(encode_puback(first_mid) + b"\x32\x03\x00\x09a")
            assert await until(lambda: len(broker.publishes) == 5)  # two re-sent
            pending_after_close = client.pending()
            for _conn, mid in broker.publishes[3:]:
                await broker.send(encode_puback(mid))
            assert await until(lambda: client.pending() == 0)
            await client.stop()
            return client.stats.as_dict(), pending_after_close, broker.publishes

    stats, pending_after_close, publishes = asyncio.run(scenario())
    assert pending_after_close == 2  # the PUBACK before the bad packet counted
    assert [conn for conn, _mid in publishes] == [1, 1, 1, 2, 2]
    assert [mid for _c, mid in publishes[3:]] == [mid for _c, mid in publishes[1:3]]
    assert stats["malformed"] == 1
    assert stats["acknowledged"] == stats["published"] == 3


@pytest.mark.parametrize(
    ("packet", "why"),
    [
        (b"\x40\x01\x00", "PUBACK of one byte"),
        (b"\x40\x03\x00\x01\x00", "PUBACK with a trailing byte"),
        (b"\x42\x02\x00\x01", "PUBACK with reserved flags"),
        (b"\x34\x05\x00\x01t\x00\x01", "PUBLISH at QoS 2"),
        (b"\x38\x03\x00\x01t", "DUP on a QoS 0 PUBLISH"),
        (b"\x32\x05\x00\x01t\x00\x00", "QoS 1 PUBLISH with packet id 0"),
        (b"\x30\x03\x00\x01+", "wildcard in a topic name"),
        (b"\x90\x02\x00\x01", "SUBACK without a return code"),
        (b"\x20\x02\x00\x00", "a second CONNACK"),
        (b"\xa0\x02\x00\x01", "an UNSUBSCRIBE sent to a client"),
        (b"\xd0\x01\x00", "PINGRESP with a body"),
    ],
)
def test_malformed_packet_closes_the_connection_and_is_counted(packet: bytes, why: str) -> None:
    async def scenario() -> dict[str, int]:
        async with FakeBroker() as broker:
            client = AsyncMqttClient(broker.url, "t-malformed", reconnect_min_s=0.05)
            await client.start()
            assert await client.wait_connected(5)
            await broker.send(packet)
            assert await until(lambda: broker.connections == 2), why
            assert await client.wait_connected(5)
            await client.stop()
            return client.stats.as_dict()

    stats = asyncio.run(scenario())
    assert stats["malformed"] == 1, why
    assert stats["connects"] == 2


def test_invalid_utf8_topic_closes_the_connection_without_calling_back() -> None:
    async def scenario() -> tuple[dict[str, int], list[str]]:
        async with FakeBroker() as broker:
            seen: list[str] = []
            client = AsyncMqttClient(broker.url, "t-utf8", reconnect_min_s=0.05)
            client.subscribe("#", lambda topic, _p: seen.append(topic))
            await client.start()
            assert await client.wait_subscribed(5)
            await broker.send(raw_publish(b"site/\xff\xfe", b"x", mid=7))
            assert await until(lambda: broker.connections == 2)
            await broker.send(raw_publish(b"site/ok", b"y", mid=8))
            assert await until(lambda: seen == ["site/ok"])
            await client.stop()
            return client.stats.as_dict(), seen

    stats, seen = asyncio.run(scenario())
    assert stats["malformed"] == 1
    assert seen == ["site/ok"]


# ---------------------------------------------------------------- maximum packet size


def test_oversized_publish_is_refused_before_its_body_is_buffered_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="gridflex.mqtt_asyncio")

    async def scenario() -> tuple[dict[str, int], bool]:
        async with FakeBroker() as broker:
            client = AsyncMqttClient(
                broker.url, "t-big", reconnect_min_s=0.05, max_packet_size=64 * 1024
            )
            await client.start()
            assert await client.wait_connected(5)
            for connection in (1, 2):
                # A 256 MB PUBLISH announced; only its first bytes are sent.
                await broker.send(b"\x30" + encode_varint(256 * 1024 * 1024 - 1) + b"\x00\x01t")
                assert await until(lambda n=connection: broker.connections == n + 1)
            connected = await client.wait_connected(5)
            await client.stop()
            return client.stats.as_dict(), connected

    stats, connected = asyncio.run(scenario())
    assert stats["oversized"] == 2
    assert connected
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "maximum packet" in r.getMessage()
    ]
    assert len(warnings) == 1


def test_packet_at_the_maximum_size_is_delivered() -> None:
    limit = 4096
    topic = b"t/max"
    payload = b"p" * (limit - 2 - 2 - len(topic) - 2 - 1)  # header 1+2, topic, mid

    async def scenario() -> tuple[list[bytes], dict[str, int]]:
        async with FakeBroker() as broker:
            got: list[bytes] = []
            client = AsyncMqttClient(broker.url, "t-max", max_packet_size=limit)
            client.subscribe("t/#", lambda _t, p: got.append(p))
            await client.start()
            assert await client.wait_subscribed(5)
            packet = raw_publish(topic, payload, mid=5)
            assert len(packet) == limit
            await broker.send(packet)
            assert await until(lambda: len(got) == 1)
            await client.stop()
            return got, client.stats.as_dict()

    got, stats = asyncio.run(scenario())
    assert got == [payload]
    assert stats["oversized"] == 0


# ---------------------------------------------------------------- subscriptions


@pytest.mark.parametrize(
    ("topic_filter", "rule"),
    [
        ("", "at least one character"),
        ("a/#/b", "'#' must be a whole level and the last one"),
        ("a/b#", "'#' must be a whole level"),
        ("a/b+/c", "'+' must fill a whole level"),
        ("a/\0", "NUL"),
        ("$share/g", "shared subscription"),
        ("$share/g+/a", "shared subscription"),
        ("x" * 70_000, "at most 65535"),
    ],
)
def test_invalid_topic_filter_is_refused_at_the_call(topic_filter: str, rule: str) -> None:
    client = AsyncMqttClient("mqtt://127.0.0.1:1883", "t-filter")
    with pytest.raises(ValueError, match="topic filter") as info:
        client.subscribe(topic_filter, lambda _t, _p: None)
    assert rule in str(info.value)
    assert repr(topic_filter[:40])[:-1] in str(info.value)
    with pytest.raises(ValueError, match=r"topic filter"):
        MqttClient("mqtt://127.0.0.1:1883", "t-filter-paho").subscribe(
            topic_filter, lambda _t, _p: None
        )


def test_invalid_filter_is_never_sent_and_the_connection_stays_up(mosquitto: Broker) -> None:
    async def scenario() -> tuple[list[bytes], dict[str, int]]:
        got: list[bytes] = []
        client = AsyncMqttClient(mosquitto.url, "t-filter-live", clean_session=True)
        await client.start()
        assert await client.wait_connected(10)
        with pytest.raises(ValueError, match="'#' must be a whole level"):
            client.subscribe("gridflex/#/telemetry", lambda _t, p: got.append(p))
        client.subscribe("t/filter-live", lambda _t, p: got.append(p))
        assert await client.wait_subscribed(10)
        client.publish("t/filter-live", b"still here")
        assert await until(lambda: got == [b"still here"])
        await client.stop()
        return got, client.stats.as_dict()

    got, stats = asyncio.run(scenario())
    assert got == [b"still here"]
    assert stats["connects"] == 1  # never dropped by the broker, never reconnected


def test_refused_subscription_raises_from_wait_subscribed_and_reaches_on_error() -> None:
    async def scenario() -> tuple[list[MqttClientError], str, dict[str, int]]:
        async with FakeBroker() as broker:
            broker.suback_codes["secret/#"] = 0x80
            errors: list[MqttClientError] = []
            client = AsyncMqttClient(
                broker.url, "t-refused-sub", reconnect_min_s=0.05, on_error=errors.append
            )
            client.subscribe("open/#", lambda _t, _p: None)
            client.subscribe("secret/#", lambda _t, _p: None)
            await client.start()
            with pytest.raises(SubscriptionRefused) as info:
                await client.wait_subscribed(5)
            await client.stop()
            return errors, info.value.topic_filter, client.stats.as_dict()

    errors, refused, stats = asyncio.run(scenario())
    assert refused == "secret/#"
    assert [type(e) for e in errors] == [SubscriptionRefused]
    assert "secret/#" in str(errors[0])
    assert stats["refused_subscriptions"] == 1


def test_granted_subscriptions_make_wait_subscribed_true() -> None:
    async def scenario() -> bool:
        async with FakeBroker() as broker:
            client = AsyncMqttClient(broker.url, "t-granted")
            client.subscribe("a/+", lambda _t, _p: None)
            await client.start()
            granted = await client.wait_subscribed(5)
            await client.stop()
            return granted

    assert asyncio.run(scenario()) is True


def test_subscribe_packet_id_is_not_reused_by_publishes_while_in_flight() -> None:
    async def scenario() -> tuple[int, set[int], int]:
        async with FakeBroker() as broker:
            broker.answer_subscribe = False  # the SUBSCRIBE stays in flight throughout
            client = AsyncMqttClient(broker.url, "t-submid", max_inflight=0)
            await client.start()
            assert await client.wait_connected(5)
            client.subscribe("t/submid", lambda _t, _p: None)
            assert await until(lambda: len(broker.subscribes) == 1)
            sub_mid = broker.subscribes[0][1]
            total = 65_600  # more than the identifier space: every id comes round again
            for i in range(total):
                assert client.publish("t/submid", b"%d" % i)
                if i % 5000 == 0:
                    await asyncio.sleep(0)
            assert await until(lambda: client.pending() == 0, 60)
            await client.stop()
            return sub_mid, {mid for _c, mid in broker.publishes}, len(broker.publishes)

    sub_mid, publish_mids, sent = asyncio.run(scenario())
    assert sent == 65_600
    assert sub_mid not in publish_mids
    assert len(publish_mids) == 65_534  # every other identifier was used


def test_subscriptions_beyond_the_in_flight_bound_wait_for_a_suback_then_go_together() -> None:
    async def scenario() -> tuple[int, list[str], int]:
        async with FakeBroker() as broker:
            broker.answer_subscribe = False
            client = AsyncMqttClient(broker.url, "t-subs-bound")
            await client.start()
            assert await client.wait_connected(5)
            for i in range(300):
                client.subscribe(f"t/{i}", lambda _t, _p: None)
            assert await until(lambda: len(broker.subscribes) == 256)
            await asyncio.sleep(0.05)
            held_back = len(broker.subscribes)
            first_mid = broker.subscribes[0][1]
            await broker.send(b"\x90\x03" + first_mid.to_bytes(2, "big") + b"\x01")
            assert await until(lambda: len(broker.subscribes) == 257)
            mids = {mid for _c, mid, _f in broker.subscribes}
            await client.stop()
            return held_back, broker.subscribes[-1][2], len(mids)

    held_back, last_filters, distinct_mids = asyncio.run(scenario())
    assert held_back == 256
    assert last_filters == [f"t/{i}" for i in range(256, 300)]
    assert distinct_mids == 257


# ---------------------------------------------------------------- sessions and login


def test_lost_session_on_reconnect_reaches_on_error() -> None:
    async def scenario() -> tuple[list[MqttClientError], dict[str, int]]:
        async with FakeBroker(session_present=False) as broker:
            errors: list[MqttClientError] = []
            client = AsyncMqttClient(
                broker.url, "t-session", reconnect_min_s=0.05, on_error=errors.append
            )
            client.subscribe("t/session", lambda _t, _p: None)
            await client.start()
            assert await client.wait_connected(5)
            first = list(errors)  # a first connection may create the session: no error
            broker.session_present = True
            await broker.send(b"\xff\x00")  # malformed: the client reconnects
            assert await until(lambda: client.stats.as_dict()["connects"] == 2)
            kept = list(errors)
            broker.session_present = False
            await broker.send(b"\xff\x00")
            assert await until(lambda: len(errors) == 1)
            await client.stop()
            assert first == kept == []
            return errors, client.stats.as_dict()

    errors, stats = asyncio.run(scenario())
    assert isinstance(errors[0], SessionLost)
    assert stats["sessions_lost"] == 1


def test_a_publisher_without_subscriptions_has_no_session_to_lose() -> None:
    async def scenario() -> tuple[int, list[MqttClientError]]:
        async with FakeBroker(session_present=False) as broker:
            errors: list[MqttClientError] = []
            client = AsyncMqttClient(
                broker.url, "t-pub-only", reconnect_min_s=0.05, on_error=errors.append
            )
            await client.start()
            assert await client.wait_connected(5)
            await broker.send(b"\xff\x00")  # malformed: the client reconnects
            assert await until(lambda: client.stats.as_dict()["connects"] == 2)
            await client.stop()
            return client.stats.as_dict()["sessions_lost"], errors

    assert asyncio.run(scenario()) == (0, [])


@pytest.mark.parametrize(
    ("clean_session", "expect_session", "lost"),
    [(False, True, 1), (False, False, 0), (True, True, 0)],
)
def test_first_connection_without_a_session_is_lost_only_when_one_was_expected(
    clean_session: bool, expect_session: bool, lost: int
) -> None:
    async def scenario() -> int:
        async with FakeBroker(session_present=False) as broker:
            errors: list[MqttClientError] = []
            client = AsyncMqttClient(
                broker.url,
                "t-expect",
                clean_session=clean_session,
                expect_session=expect_session,
                on_error=errors.append,
            )
            await client.start()
            assert await client.wait_connected(5)
            await client.stop()
            assert len(errors) == client.stats.as_dict()["sessions_lost"]
            return len(errors)

    assert asyncio.run(scenario()) == lost


def test_broker_restart_without_persistence_is_reported_as_a_lost_session(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    brokers = [start_broker("mosquitto", persistence_dir=store)]
    port = brokers[0].port

    async def scenario() -> tuple[list[int], list[MqttClientError]]:
        errors: list[MqttClientError] = []
        client = AsyncMqttClient(
            brokers[0].url, "t-session-live", reconnect_min_s=0.05, on_error=errors.append
        )
        client.subscribe("t/session-live", lambda _t, _p: None)
        await client.start()
        assert await client.wait_subscribed(10)
        counts = []
        # Restart 1: persistence kept the session. Restart 2: a broker without it.
        for persistence in (store, None):
            brokers[-1].stop()
            assert await until(lambda: not client.connected)
            brokers.append(start_broker("mosquitto", port=port, persistence_dir=persistence))
            assert await client.wait_connected(20)
            counts.append(len(errors))
        await client.stop()
        return counts, errors

    try:
        counts, errors = asyncio.run(scenario())
    finally:
        for broker in brokers:
            broker.stop()
    assert counts == [0, 1]
    assert isinstance(errors[0], SessionLost)


def test_password_without_a_user_name_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="a password needs a user name"):
        AsyncMqttClient("mqtt://127.0.0.1:1883", "t-pw", password="secret")
    with pytest.raises(ValueError, match="a password needs a user name"):
        MqttClient("mqtt://127.0.0.1:1883", "t-pw-paho", password="secret")
