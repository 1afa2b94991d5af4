"""MQTT 3.1.1 packets as bytes: the pure codec under ``gridflex.mqtt_asyncio``.

Only what a gridflex client sends and receives: CONNECT, PUBLISH (QoS 0/1, retain, DUP),
PUBACK, SUBSCRIBE, PINGREQ and DISCONNECT out; CONNACK, PUBLISH, PUBACK, SUBACK, UNSUBACK
and PINGRESP in. No I/O here: ``PacketReader`` turns a TCP byte stream into
``(first byte, body)`` packets, the ``encode_*`` functions build packets and the
``decode_*`` functions read the bodies that come in.

Input from the broker is not trusted: a packet whose length exceeds the reader's
``max_packet_size`` raises ``PacketTooLarge`` before its body is buffered, and a body that
is truncated, has trailing bytes, reserved flags set, a topic that is not valid UTF-8
(section 1.5.3) or a wildcard in a topic name raises ``MalformedPacket``; the client then
closes the connection (section 4.8). ``validate_filter`` checks a topic filter (4.7.1)
before it is ever sent.

Reference: MQTT Version 3.1.1 (OASIS Standard, 29 October 2014), sections 2.2 (fixed
header, remaining length), 3.1 (CONNECT), 3.2 (CONNACK), 3.3 (PUBLISH), 3.4 (PUBACK),
3.8/3.9 (SUBSCRIBE/SUBACK), 3.12/3.13 (PINGREQ/PINGRESP), 3.14 (DISCONNECT).
"""

from __future__ import annotations

import struct

__all__ = [
    "CONNACK",
    "CONNACK_REASONS",
    "DEFAULT_MAX_PACKET_SIZE",
    "DISCONNECT_PACKET",
    "PINGREQ_PACKET",
    "PINGRESP",
    "PUBACK",
    "PUBLISH",
    "SUBACK",
    "SUBACK_FAILURE",
    "UNSUBACK",
    "MalformedPacket",
    "PacketReader",
    "PacketTooLarge",
    "decode_connack",
    "decode_puback",
    "decode_publish",
    "decode_suback",
    "encode_connect",
    "encode_puback",
    "encode_publish",
    "encode_subscribe",
    "encode_topic",
    "encode_varint",
    "filter_matches",
    "publish_header",
    "validate_filter",
    "with_dup",
]

# Control packet types (the high nibble of the first byte).
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
SUBSCRIBE = 8
SUBACK = 9
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
_PUBACK_HEADER = b"\x40\x02"
_DUP_BIT = 0x08
_MAX_REMAINING_LENGTH = 268_435_455  # four varint bytes (2.2.3)
_U16 = struct.Struct(">H")
#: Largest packet (fixed header included) a ``PacketReader`` buffers unless told otherwise.
DEFAULT_MAX_PACKET_SIZE = 1 << 20
#: SUBACK return codes: QoS 0, 1, 2 granted, or 0x80 failure (3.9.3).
SUBACK_FAILURE = 0x80
_SUBACK_CODES = frozenset((0, 1, 2, SUBACK_FAILURE))
#: Required flag nibble of the packets a client receives, PUBLISH aside (2.2.2).
_FLAGS = {CONNACK: 0, PUBACK: 0, SUBACK: 0, UNSUBACK: 0, PINGRESP: 0}

#: CONNACK return codes (3.2.2.3).
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class MalformedPacket(ValueError):
    """The byte stream is not MQTT 3.1.1: the connection cannot continue."""


class PacketTooLarge(MalformedPacket):
    """A packet longer than the reader's ``max_packet_size``: the connection cannot continue."""


def encode_varint(n: int) -> bytes:
    """MQTT's variable-length "remaining length" encoding of ``n`` (2.2.3)."""
    if not 0 <= n <= _MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {n} is outside 0..{_MAX_REMAINING_LENGTH}")
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        if n:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    data = text.encode("utf-8") if isinstance(text, str) else text
    if len(data) > 0xFFFF:
        raise ValueError(f"MQTT string of {len(data)} bytes: at most 65535")
    return _U16.pack(len(data)) + data


def encode_topic(topic: str) -> bytes:
    """A topic name as PUBLISH carries it (length-prefixed UTF-8), checked for wildcards."""
    if not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise ValueError(f"topic {topic!r}: a topic name is non-empty, without + # or NUL")
    return _string(topic)


def publish_header(qos: int, retain: bool) -> int:
    """First byte of a PUBLISH packet (DUP clear)."""
    if qos not in (0, 1):
        raise ValueError(f"QoS {qos}: this client publishes at QoS 0 or 1")
    return (PUBLISH << 4) | (qos << 1) | int(retain)


def encode_publish(header: int, topic: bytes, payload: bytes, mid: int = 0) -> bytes:
    """A PUBLISH packet: ``header`` from ``publish_header``, ``topic`` from ``encode_topic``.

    ``mid`` is the packet identifier, present only at QoS 1 (``header`` bit 1).
    """
    variable = topic + _U16.pack(mid) if header & 0x06 else topic
    size = len(variable) + len(payload)
    length = bytes((size,)) if size < 128 else encode_varint(size)
    return b"".join((bytes((header,)), length, variable, payload))


def with_dup(packet: bytes) -> bytes:
    """``packet`` (a QoS 1 PUBLISH) with its DUP flag set, for re-delivery (3.3.1.1)."""
    return bytes((packet[0] | _DUP_BIT,)) + packet[1:]


def encode_puback(mid: int) -> bytes:
    """PUBACK for packet identifier ``mid``."""
    return _PUBACK_HEADER + _U16.pack(mid)


def encode_subscribe(mid: int, filters: list[tuple[str, int]]) -> bytes:
    """SUBSCRIBE for ``(topic filter, QoS)`` pairs; each filter is checked first."""
    for topic_filter, _qos in filters:
        validate_filter(topic_filter)
    body = _U16.pack(mid) + b"".join(_string(f) + bytes((qos,)) for f, qos in filters)
    return bytes(((SUBSCRIBE << 4) | 0x02,)) + encode_varint(len(body)) + body


def encode_connect(
    client_id: str,
    *,
    clean_session: bool,
    keepalive_s: int,
    will: tuple[str, bytes, int, bool] | None = None,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT (protocol level 4 = 3.1.1); ``will`` is ``(topic, payload, qos, retain)``."""
    if not 0 <= keepalive_s <= 0xFFFF:
        raise ValueError(f"keepalive {keepalive_s} s is outside 0..65535")
    flags = 0x02 if clean_session else 0
    payload = [_string(client_id)]
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += [encode_topic(topic), _string(message)]
    if password is not None and username is None:
        raise ValueError("a password needs a user name (MQTT 3.1.1 section 3.1.2.9)")
    if username is not None:
        flags |= 0x80
        payload.append(_string(username))
        if password is not None:
            flags |= 0x40
            payload.append(_string(password))
    body = b"".join([_string("MQTT"), bytes((4, flags)), _U16.pack(keepalive_s), *payload])
    return bytes((CONNECT << 4,)) + encode_varint(len(body)) + body


class PacketReader:
    """Reassembles MQTT packets from a TCP byte stream (pure: bytes in, packets out).

    ``max_packet_size`` bounds one packet, fixed header included: a longer one is refused
    as soon as its remaining length is read, so its body is never buffered.
    """

    def __init__(self, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        if max_packet_size < 2:
            raise ValueError(f"max_packet_size {max_packet_size}: at least 2 bytes")
        self.max_packet_size = max_packet_size
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add ``data``; return the complete packets as ``(first byte, body)``.

        ``body`` is everything after the fixed header. An incomplete packet stays buffered.
        Raises ``MalformedPacket`` for a remaining length longer than four bytes and
        ``PacketTooLarge`` for a packet beyond ``max_packet_size``; the buffer is then
        cleared (the stream cannot be resynchronised: close the connection).
        """
        buf = self._buffer
        buf += data
        packets = []
        start = 0
        size = len(buf)
        limit = self.max_packet_size
        while size - start >= 2:
            length = buf[start + 1]
            if length < 0x80:  # one length byte: PUBACK, PINGRESP, small PUBLISH
                pos = start + 2
            else:
                decoded = _remaining_length(buf, start + 1)
                if decoded is None:
                    break  # the length itself is incomplete
                length, pos = decoded
            end = pos + length
            if end - start > limit:
                kind = buf[start] >> 4
                buf.clear()
                raise PacketTooLarge(
                    f"packet of {end - start} bytes (type {kind}) exceeds "
                    f"the maximum packet size of {limit} bytes"
                )
            if end > size:
                break
            packets.append((buf[start], bytes(buf[pos:end])))
            start = end
        if start:
            del buf[:start]
        return packets


def _remaining_length(buf: bytearray, pos: int) -> tuple[int, int] | None:
    """Decode the remaining length at ``pos``: ``(length, first body index)``, None if cut."""
    length = 0
    for shift in (0, 7, 14, 21):
        if pos >= len(buf):
            return None
        digit = buf[pos]
        pos += 1
        length |= (digit & 0x7F) << shift
        if digit < 0x80:
            return length, pos
    buf.clear()
    raise MalformedPacket("remaining length longer than four bytes")


def _check_flags(first: int) -> None:
    flags = _FLAGS.get(first >> 4)
    if flags is not None and first & 0x0F != flags:
        raise MalformedPacket(f"packet type {first >> 4} with reserved flags {first & 0x0F:#x}")


def decode_puback(first: int, body: bytes) -> int:
    """The packet identifier of a PUBACK body (3.4): exactly two bytes."""
    if len(body) != 2 or first != PUBACK << 4:
        raise MalformedPacket(f"PUBACK of {len(body)} bytes, flags {first & 0x0F:#x}")
    return (body[0] << 8) | body[1]


def decode_connack(first: int, body: bytes) -> tuple[bool, int]:
    """``(session present, return code)`` of a CONNACK body (3.2)."""
    _check_flags(first)
    if len(body) != 2 or body[0] & 0xFE:
        raise MalformedPacket(f"CONNACK body {body.hex()}: two bytes, flags 0 or 1")
    return bool(body[0]), body[1]


def decode_suback(first: int, body: bytes) -> tuple[int, bytes]:
    """``(packet identifier, return codes)`` of a SUBACK body (3.9)."""
    _check_flags(first)
    if len(body) < 3:
        raise MalformedPacket(f"SUBACK of {len(body)} bytes: a packet id and a return code")
    codes = body[2:]
    for code in codes:
        if code not in _SUBACK_CODES:
            raise MalformedPacket(f"SUBACK return code {code:#x}")
    return (body[0] << 8) | body[1], codes


def decode_publish(first: int, body: bytes) -> tuple[str, int, int, bytes]:
    """``(topic, QoS, packet identifier, payload)`` of a PUBLISH (3.3); mid 0 at QoS 0.

    Refuses QoS 2 and 3 (this client never subscribes at QoS 2), DUP at QoS 0, a body
    shorter than its topic and packet id, and a topic name that is empty, not UTF-8, or
    holds a NUL or a wildcard (1.5.3, 3.3.2.1).
    """
    qos = (first >> 1) & 0x03
    if qos > 1 or (qos == 0 and first & _DUP_BIT):
        raise MalformedPacket(f"PUBLISH flags {first & 0x0F:#x}: QoS 0 or 1 expected")
    if len(body) < 2:
        raise MalformedPacket(f"PUBLISH of {len(body)} bytes: no topic length")
    size = (body[0] << 8) | body[1]
    pos = 2 + size
    if qos:
        if len(body) < pos + 2:
            raise MalformedPacket("PUBLISH truncated inside its topic or packet id")
        mid = (body[pos] << 8) | body[pos + 1]
        if mid == 0:
            raise MalformedPacket("PUBLISH at QoS 1 with packet id 0")
        start = pos + 2
    elif len(body) < pos:
        raise MalformedPacket("PUBLISH truncated inside its topic")
    else:
        mid = 0
        start = pos
    try:
        topic = body[2:pos].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"PUBLISH topic is not valid UTF-8 ({exc.reason})") from None
    if not topic or "\0" in topic or "+" in topic or "#" in topic:
        raise MalformedPacket(f"PUBLISH topic name {topic!r}: non-empty, without + # or NUL")
    return topic, qos, mid, body[start:]


def validate_filter(topic_filter: str) -> None:
    """Raise ``ValueError`` naming ``topic_filter`` and the rule it breaks (4.7.1, 1.5.3).

    A filter is 1..65535 bytes of UTF-8 without NUL; ``+`` fills a whole level; ``#`` fills
    the last level. A shared subscription ``$share/{group}/{filter}`` needs a group without
    wildcards and a valid filter after it.
    """
    if not topic_filter:
        raise ValueError("topic filter '': a topic filter is at least one character")
    if "\0" in topic_filter:
        raise ValueError(f"topic filter {topic_filter!r}: must not contain NUL (1.5.3)")
    try:
        encoded = topic_filter.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"topic filter {topic_filter!r}: must be valid UTF-8 (no lone surrogates, 1.5.3)"
        ) from None
    if len(encoded) > 0xFFFF:
        raise ValueError(
            f"topic filter {topic_filter[:40]!r}...: {len(encoded)} bytes, at most 65535"
        )
    levels = topic_filter.split("/")
    if levels[0] == "$share":
        if len(levels) < 3 or not levels[1] or "+" in levels[1] or "#" in levels[1]:
            raise ValueError(
                f"topic filter {topic_filter!r}: a shared subscription is "
                "$share/{group}/{filter}, the group non-empty without + or #"
            )
        levels = levels[2:]
        if levels == [""]:
            raise ValueError(f"topic filter {topic_filter!r}: the shared filter is empty")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            raise ValueError(
                f"topic filter {topic_filter!r}: '#' must be a whole level and the last one"
            )
        if "+" in level and level != "+":
            raise ValueError(f"topic filter {topic_filter!r}: '+' must fill a whole level")


def filter_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (MQTT 3.1.1 section 4.7: ``+``, ``#``).

    ``#`` also matches the parent level (``a/#`` matches ``a``); a topic starting with ``$``
    is not matched by a filter starting with a wildcard (section 4.7.2).
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    levels = topic.split("/")
    parts = topic_filter.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= len(levels):
            return False
        if part != "+" and part != levels[i]:
            return False
    return len(parts) == len(levels)
