"""The MQTT 3.1.1 codec: packets byte for byte as the standard lays them out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from gridflex.mqtt_wire import (
    MalformedPacket,
    PacketReader,
    PacketTooLarge,
    decode_connack,
    decode_puback,
    decode_publish,
    decode_suback,
    encode_connect,
    encode_puback,
    encode_publish,
    encode_subscribe,
    encode_topic,
    encode_varint,
    filter_matches,
    publish_header,
    validate_filter,
    with_dup,
)


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16_383, b"\xff\x7f"),
        (16_384, b"\x80\x80\x01"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_remaining_length_uses_the_standards_examples(n: int, encoded: bytes) -> None:
    # MQTT 3.1.1 table 2.4: the boundaries of one to four length bytes
    assert encode_varint(n) == encoded


def test_remaining_length_beyond_four_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="remaining length"):
        encode_varint(268_435_456)


def test_qos1_publish_carries_topic_packet_id_and_payload() -> None:
    packet = encode_publish(publish_header(1, retain=False), encode_topic("a/b"), b"xy", mid=10)
    assert packet == b"\x32\x09\x00\x03a/b\x00\x0axy"


def test_qos0_retained_publish_has_no_packet_id() -> None:
    packet = encode_publish(publish_header(0, retain=True), encode_topic("t"), b"1")
    assert packet == b"\x31\x04\x00\x01t1"


def test_large_publish_uses_a_multi_byte_length() -> None:
    payload = b"p" * 300
    packet = encode_publish(publish_header(1, retain=False), encode_topic("t"), payload, mid=1)
    assert packet[1:3] == encode_varint(3 + 2 + 300)
    assert packet.endswith(payload)


def test_redelivery_sets_dup_and_keeps_the_rest() -> None:
    packet = encode_publish(publish_header(1, retain=True), encode_topic("t"), b"v", mid=7)
    again = with_dup(packet)
    assert again[0] == packet[0] | 0x08
    assert again[1:] == packet[1:]


@pytest.mark.parametrize("topic", ["", "a/+/b", "a/#", "nul\0"])
def test_topic_names_with_wildcards_or_empty_are_refused(topic: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        encode_topic(topic)


def test_qos2_publish_is_refused() -> None:
    with pytest.raises(ValueError, match="QoS 2"):
        publish_header(2, retain=False)


def test_connect_with_will_credentials_and_persistent_session() -> None:
    packet = encode_connect(
        "c1",
        clean_session=False,
        keepalive_s=30,
        will=("w", b"off", 1, True),
        username="u",
        password="p",
    )
    body = (
        b"\x00\x04MQTT\x04"
        + bytes((0x80 | 0x40 | 0x20 | 0x08 | 0x04,))  # user, password, will retain/QoS 1/flag
        + b"\x00\x1e"
        + b"\x00\x02c1"
        + b"\x00\x01w\x00\x03off"
        + b"\x00\x01u\x00\x01p"
    )
    assert packet == b"\x10" + encode_varint(len(body)) + body


def test_clean_connect_without_will_has_only_the_clean_flag() -> None:
    packet = encode_connect("c", clean_session=True, keepalive_s=0)
    assert packet == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x00\x00\x01c"


def test_subscribe_and_puback_layout() -> None:
    assert encode_subscribe(5, [("a/#", 1)]) == b"\x82\x08\x00\x05\x00\x03a/#\x01"
    assert encode_puback(0x1234) == b"\x40\x02\x12\x34"


def test_reader_splits_a_stream_cut_anywhere_into_the_same_packets() -> None:
    big = encode_publish(publish_header(1, retain=False), encode_topic("t"), b"z" * 200, mid=3)
    stream = encode_puback(1) + b"\xd0\x00" + big + encode_puback(2)
    expected = [(0x40, b"\x00\x01"), (0xD0, b""), (big[0], big[3:]), (0x40, b"\x00\x02")]
    for cut in range(1, len(stream)):
        reader = PacketReader()
        got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert got == expected, cut


def test_reader_refuses_a_five_byte_length() -> None:
    with pytest.raises(MalformedPacket):
        PacketReader().feed(b"\x30\xff\xff\xff\xff\x01")


def test_reader_refuses_a_packet_beyond_its_maximum_size_from_the_header_alone() -> None:
    reader = PacketReader(max_packet_size=100)
    assert reader.feed(b"\x30\x62\x00\x01t" + b"x" * 95) == [(0x30, b"\x00\x01t" + b"x" * 95)]
    with pytest.raises(PacketTooLarge, match=r"101 bytes .* maximum packet size of 100"):
        reader.feed(b"\x30\x63\x00")  # 2 + 99 bytes announced; the body never came


def test_connect_with_a_password_but_no_user_name_is_refused() -> None:
    with pytest.raises(ValueError, match="a password needs a user name"):
        encode_connect("c", clean_session=True, keepalive_s=0, password="secret")


def test_decoders_read_the_standards_layouts() -> None:
    assert decode_puback(0x40, b"\x12\x34") == 0x1234
    assert decode_connack(0x20, b"\x01\x00") == (True, 0)
    assert decode_connack(0x20, b"\x00\x05") == (False, 5)
    assert decode_suback(0x90, b"\x00\x07\x01\x80") == (7, b"\x01\x80")
    assert decode_publish(0x3B, b"\x00\x03a/b\x00\x09hi") == ("a/b", 1, 9, b"hi")
    assert decode_publish(0x31, b"\x00\x01tpayload") == ("t", 0, 0, b"payload")


@pytest.mark.parametrize(
    ("first", "body"),
    [
        (0x32, b"\x00\x09a"),  # topic cut short (an IndexError before)
        (0x32, b"\x00\x01t\x00"),  # packet id cut short
        (0x30, b"\x00\x02\xff\xfe"),  # topic not UTF-8 (1.5.3)
        (0x30, b"\x00\x03a\x00b"),  # NUL in the topic
        (0x30, b"\x00\x00"),  # empty topic
        (0x36, b"\x00\x01t\x00\x01"),  # QoS 3
        (0x30, b"\x00"),  # no topic length
    ],
)
def test_malformed_publish_bodies_are_refused(first: int, body: bytes) -> None:
    with pytest.raises(MalformedPacket):
        decode_publish(first, body)


@pytest.mark.parametrize(
    "topic_filter",
    ["#", "+", "a/+/c", "a/#", "/", "+/+", "$share/g/a/+/c", "$SYS/#", "a//b", "é/ü"],
)
def test_valid_filters_pass(topic_filter: str) -> None:
    validate_filter(topic_filter)


def test_subscribe_refuses_an_invalid_filter_before_encoding() -> None:
    with pytest.raises(ValueError, match=r"topic filter 'a/#/b'"):
        encode_subscribe(1, [("a/#/b", 1)])


_LEVEL = st.sampled_from(["a", "b", "gridflex", "v1", "", "$SYS", "x y"])


@given(
    topic=st.lists(_LEVEL, min_size=1, max_size=5).map("/".join),
    pattern=st.lists(st.sampled_from(["a", "b", "v1", "", "+", "$SYS"]), min_size=1, max_size=5),
    hash_tail=st.booleans(),
)
@settings(max_examples=500)
def test_filter_matches_agrees_with_paho(topic: str, pattern: list[str], hash_tail: bool) -> None:
    topic_filter = "/".join([*pattern, "#"] if hash_tail else pattern)
    assert filter_matches(topic_filter, topic) == topic_matches_sub(topic_filter, topic)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("gridflex/v1/s/+/+/telemetry", "gridflex/v1/s/inverter/inv1/telemetry", True),
        ("gridflex/v1/s/+/+/telemetry", "gridflex/v1/s/inverter/inv1/status", False),
        ("gridflex/v1/s/dispatch/+/ack", "gridflex/v1/s/dispatch/a/ack", True),
        ("a/#", "a", True),
        ("#", "$SYS/broker", False),
        ("+/x", "/x", True),
    ],
)
def test_filter_matches_examples(topic_filter: str, topic: str, expected: bool) -> None:
    assert filter_matches(topic_filter, topic) is expected
