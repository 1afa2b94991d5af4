"""MQTT 3.1.1 packets as bytes: the pure codec under ``gridflex.mqtt_asyncio``.

Only what a gridflex client sends and receives: CONNECT, PUBLISH (QoS 0/1, retain, DUP),
PUBACK, SUBSCRIBE, PINGREQ and DISCONNECT out; CONNACK, PUBLISH, PUBACK, SUBACK, UNSUBACK
and PINGRESP in. No I/O here: ``PacketReader`` turns a TCP byte stream into
``(first byte, body)`` packets, the ``encode_*`` functions build packets.

Reference: MQTT Version 3.1.1 (OASIS Standard, 29 October 2014), sections 2.2 (fixed
header, remaining length), 3.1 (CONNECT), 3.2 (CONNACK), 3.3 (PUBLISH), 3.4 (PUBACK),
3.8/3.9 (SUBSCRIBE/SUBACK), 3.12/3.13 (PINGREQ/PINGRESP), 3.14 (DISCONNECT).
"""

from __future__ import annotations

import struct

__all__ = [
    "CONNACK",
    "CONNACK_REASONS",
    "DISCONNECT_PACKET",
    "PINGREQ_PACKET",
    "PINGRESP",
    "PUBACK",
    "PUBLISH",
    "SUBACK",
    "UNSUBACK",
    "MalformedPacket",
    "PacketReader",
    "encode_connect",
    "encode_puback",
    "encode_publish",
    "encode_subscribe",
    "encode_topic",
    "encode_varint",
    "filter_matches",
    "publish_header",
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
    """SUBSCRIBE for ``(topic filter, QoS)`` pairs."""
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
    if username is not None:
        flags |= 0x80
        payload.append(_string(username))
        if password is not None:
            flags |= 0x40
            payload.append(_string(password))
    body = b"".join([_string("MQTT"), bytes((4, flags)), _U16.pack(keepalive_s), *payload])
    return bytes((CONNECT << 4,)) + encode_varint(len(body)) + body


class PacketReader:
    """Reassembles MQTT packets from a TCP byte stream (pure: bytes in, packets out)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add ``data``; return the complete packets as ``(first byte, body)``.

        ``body`` is everything after the fixed header. An incomplete packet stays buffered.
        Raises ``MalformedPacket`` for a remaining length longer than four bytes.
        """
        buf = self._buffer
        buf += data
        packets = []
        start = 0
        size = len(buf)
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
