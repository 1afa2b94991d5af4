"""Property tests of the MQTT codec and client against malformed, truncated, oversized input.

The codec (pure) must refuse bad bytes only with ``MalformedPacket`` and keep its buffer
bounded; the client, fed by a fake broker over a real loopback socket, must never let an
exception escape its protocol, close and reconnect cleanly, and end with exact counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.mqtt_wire import (
    MalformedPacket,
    PacketReader,
    decode_connack,
    decode_puback,
    decode_publish,
    decode_suback,
    encode_publish,
    encode_topic,
    encode_varint,
    publish_header,
    validate_filter,
)
from tests.gridflex.test_mqtt_hardening import FakeBroker, raw_publish, until

_FIRST = st.integers(0, 255)
_BODY = st.binary(max_size=80)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# ---------------------------------------------------------------- the pure codec


@given(
    stream=st.binary(max_size=600),
    cuts=st.lists(st.integers(0, 600), max_size=8),
    limit=st.integers(2, 300),
)
@settings(max_examples=300)
def test_reader_on_arbitrary_bytes_raises_only_malformed_and_stays_bounded(
    stream: bytes, cuts: list[int], limit: int
) -> None:
    reader = PacketReader(max_packet_size=limit)
    try:
        for chunk in _chunks(stream, cuts):
            for _first, body in reader.feed(chunk):
                assert 1 + len(encode_varint(len(body))) + len(body) <= limit
            assert len(reader._buffer) < max(limit, 5)  # one incomplete packet at most
    except MalformedPacket:
        pass


@given(first=_FIRST, body=_BODY)
@settings(max_examples=300)
def test_decoders_refuse_bad_bodies_only_with_malformed_packet(first: int, body: bytes) -> None:
    for decode in (decode_puback, decode_connack, decode_suback):
        with contextlib.suppress(MalformedPacket):
            decode(first, body)
    try:
        topic, qos, mid, payload = decode_publish(first, body)
    except MalformedPacket:
        return
    # What decodes is a PUBLISH that encodes back to the same bytes.
    assert encode_publish(first, encode_topic(topic), payload, mid) == (
        bytes((first,)) + encode_varint(len(body)) + body
    )
    assert qos in (0, 1)


_TOPIC = st.text(
    st.characters(blacklist_characters="+#\0", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=30,
)


@given(
    messages=st.lists(
        st.tuples(_TOPIC, st.binary(max_size=300), st.integers(0, 1), st.integers(1, 0xFFFF)),
        min_size=1,
        max_size=10,
    ),
    cuts=st.lists(st.integers(0, 5000), max_size=10),
)
@settings(max_examples=200)
def test_publishes_cut_anywhere_decode_to_what_was_encoded(
    messages: list[tuple[str, bytes, int, int]], cuts: list[int]
) -> None:
    stream = b"".join(
        encode_publish(publish_header(qos, retain=False), encode_topic(t), p, mid if qos else 0)
        for t, p, qos, mid in messages
    )
    reader = PacketReader()
    packets = [packet for chunk in _chunks(stream, cuts) for packet in reader.feed(chunk)]
    decoded = [decode_publish(first, body) for first, body in packets]
    assert decoded == [(t, qos, mid if qos else 0, p) for t, p, qos, mid in messages]


_PLAIN_LEVEL = st.text(
    st.characters(blacklist_characters="+#/\0", blacklist_categories=("Cs",)), max_size=8
)


@given(
    levels=st.lists(st.one_of(_PLAIN_LEVEL, st.just("+")), min_size=1, max_size=6),
    hash_tail=st.booleans(),
    bad_at=st.integers(0, 5),
    bad=st.sampled_from(["#", "a#", "+b", "#+"]),
)
@settings(max_examples=300)
def test_filter_validation_accepts_wildcards_in_whole_levels_only(
    levels: list[str], hash_tail: bool, bad_at: int, bad: str
) -> None:
    assume(levels != [""] and levels[0] != "$share")  # empty, or a shared subscription
    validate_filter("/".join([*levels, "#"] if hash_tail else levels))
    broken = list(levels)
    broken.insert(bad_at % len(levels), bad)  # never the last level: '#' there is valid
    with pytest.raises(ValueError, match="topic filter"):
        validate_filter("/".join([*broken, "x"]))


# ---------------------------------------------------------------- the client on a socket

_GARBAGE = st.binary(min_size=1, max_size=40)
_ACTION = st.one_of(
    st.tuples(st.just("puback"), st.integers(0, 9)),
    st.tuples(st.just("garbage"), _GARBAGE),
    st.tuples(st.just("truncated"), st.integers(1, 12)),
    st.tuples(st.just("oversized"), st.integers(1, 3)),
    st.tuples(
        st.just("publish"),
        st.one_of(st.binary(min_size=1, max_size=12), st.just(b"t/fuzz/ok")),
    ),
)


async def _client_under_fire(bursts: list[list[tuple[str, Any]]]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    failures: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: failures.append(context))
    async with FakeBroker(ack=False) as broker:
        client = AsyncMqttClient(
            broker.url,
            "t-fuzz",
            reconnect_min_s=0.01,
            reconnect_max_s=0.05,
            max_packet_size=512,
        )
        client.subscribe("t/#", lambda _t, _p: None)
        await client.start()
        assert await client.wait_connected(5)
        for i in range(10):
            client.publish("t/fuzz", b"%d" % i)
        assert await until(lambda: len(broker.publishes) >= 10)
        valid = raw_publish(b"t/fuzz/ok", b"payload", mid=77)
        for burst in bursts:  # one write each: its packets arrive in one read
            data = []
            for kind, arg in burst:
                if kind == "puback":
                    data.append(b"\x40\x02" + broker.publishes[arg][1].to_bytes(2, "big"))
                elif kind == "garbage":
                    data.append(arg)
                elif kind == "truncated":
                    data.append(valid[: len(valid) - arg])
                elif kind == "oversized":
                    data.append(b"\x30" + encode_varint(512 * arg) + b"\x00")
                else:
                    data.append(raw_publish(arg, b"x", mid=9))
            await broker.send(b"".join(data))
            await asyncio.sleep(0.001)
        # Now a well-behaved broker: drop the connection; the client re-sends what is
        # still in flight and every message ends acknowledged exactly once.
        broker.ack = True
        for writer in broker._writers:
            writer.transport.abort()
        settled = await until(lambda: client.connected and client.pending() == 0, 20)
        await client.stop()
        return {"settled": settled, "stats": client.stats.as_dict(), "failures": failures}


@given(bursts=st.lists(st.lists(_ACTION, min_size=1, max_size=4), min_size=1, max_size=4))
@example(bursts=[[("puback", 0), ("garbage", b"\xff\x00")]])  # issue 9: lost ack count
@example(bursts=[[("puback", 1), ("publish", b"\xff")]])  # issue 9: topic not UTF-8
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
def test_client_survives_hostile_broker_bytes_with_exact_counts(
    bursts: list[list[tuple[str, Any]]],
) -> None:
    result = asyncio.run(_client_under_fire(bursts))
    stats = result["stats"]
    assert result["failures"] == []  # nothing escaped data_received or a callback
    assert result["settled"], stats
    assert stats["published"] == stats["acknowledged"] == 10
