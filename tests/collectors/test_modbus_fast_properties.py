"""Property tests of the lean Modbus TCP client against arbitrary replies from a device.

The codec (pure) must refuse bad bytes only with ``DeviceError`` (or ``IllegalAddress`` for
exception 2) and keep its buffer bounded; the protocol, fed any byte stream in any chunks,
must never let an exception escape ``data_received``, answer the request in flight at most
once, never with the registers of a reply under another transaction or unit id, and give
back exactly the registers of a valid reply.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from collectors.modbus.fast import (
    DeviceError,
    FrameBuffer,
    LeanModbusClient,
    Reply,
    decode_read_response,
    decode_write_response,
    registers,
)
from gridflex.sunspec.discovery import IllegalAddress

_CUTS = st.lists(st.integers(0, 2_000), max_size=8)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def _frame(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def _read_reply(values: list[int]) -> bytes:
    return bytes([3, 2 * len(values)]) + struct.pack(f">{len(values)}H", *values)


# ---------------------------------------------------------------- the pure codec


@given(stream=st.binary(max_size=1_200), cuts=_CUTS)
@example(stream=_frame(1, 1, b"\x03") + b"\x00\x01\x00\x07", cuts=[])  # protocol id 7 next
@example(stream=bytes([0, 1, 0, 0, 0, 1, 1]), cuts=[3])  # MBAP length 1: no function code
@settings(max_examples=300)
def test_frame_buffer_on_any_stream_gives_frames_or_a_device_error_and_stays_bounded(
    stream: bytes, cuts: list[int]
) -> None:
    buffer = FrameBuffer()
    for chunk in _chunks(stream, cuts):
        try:
            frames = buffer.feed(chunk)
        except DeviceError:
            return  # the stream is not Modbus TCP: the connection is dropped
        for tid, unit, pdu in frames:
            assert 0 <= tid <= 0xFFFF and 0 <= unit <= 0xFF
            assert 1 <= len(pdu) <= 253
        assert len(buffer._buffer) < 6 + 254  # never more than one incomplete frame


@given(pdu=st.binary(max_size=260), address=st.integers(0, 0xFFFF), count=st.integers(1, 125))
@example(pdu=b"\x83\x02", address=40_000, count=2)
@example(pdu=b"\x83", address=40_000, count=2)
@settings(max_examples=300)
def test_any_read_reply_gives_the_asked_registers_or_a_device_error(
    pdu: bytes, address: int, count: int
) -> None:
    try:
        data = decode_read_response(pdu, address, count)
    except (DeviceError, IllegalAddress):
        return
    assert len(data) == 2 * count
    assert pdu == bytes([3, 2 * count]) + data


@given(pdu=st.binary(max_size=12), address=st.integers(0, 0xFFFF), count=st.integers(1, 123))
@settings(max_examples=200)
def test_any_write_reply_is_an_echo_or_a_device_error(pdu: bytes, address: int, count: int) -> None:
    try:
        decode_write_response(pdu, address, count)
    except DeviceError:
        return
    assert pdu == struct.pack(">BHH", 16, address, count)


# ---------------------------------------------------------------- the protocol


class _Transport:
    """What ``LeanModbusClient`` needs of a transport, recording what it was told."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True

    def close(self) -> None:
        self.closing = True


def _client_with_request(
    address: int, count: int, unit: int, skip_tids: int
) -> tuple[LeanModbusClient, _Transport, list[Reply], int, asyncio.AbstractEventLoop]:
    """A client on a fake transport with one read in flight; its transaction id."""
    loop = asyncio.new_event_loop()
    client = LeanModbusClient("device", 502, timeout_s=60.0)
    client._loop = loop
    client._tid = skip_tids
    transport = _Transport()
    client.connection_made(transport)  # type: ignore[arg-type]
    replies: list[Reply] = []
    client.request(address, count, unit, replies.append)
    tid = struct.unpack_from(">H", transport.written[-1])[0]
    return client, transport, replies, tid, loop


_FRAMES = st.lists(
    st.tuples(st.integers(0, 0xFFFF), st.integers(0, 255), st.binary(min_size=1, max_size=40)),
    max_size=5,
)


@given(
    frames=_FRAMES,
    garbage=st.binary(max_size=40),
    cuts=_CUTS,
    address=st.integers(0, 60_000),
    count=st.integers(1, 20),
    unit=st.integers(0, 255),
    skip=st.integers(0, 0xFFFF),
)
@settings(max_examples=300)
def test_any_stream_answers_the_request_at_most_once_and_never_from_another_transaction(
    *,
    frames: list[tuple[int, int, bytes]],
    garbage: bytes,
    cuts: list[int],
    address: int,
    count: int,
    unit: int,
    skip: int,
) -> None:
    client, transport, replies, tid, loop = _client_with_request(address, count, unit, skip)
    try:
        foreign = [(t, u, p) for t, u, p in frames if (t, u) != (tid, unit)]
        stream = b"".join(_frame(t, u, p) for t, u, p in foreign) + garbage
        for chunk in _chunks(stream, cuts):
            client.data_received(chunk)  # never raises
        assert len(replies) <= 1
        for reply in replies:  # only garbage can have settled it: as an error
            assert isinstance(reply, DeviceError)
            assert transport.closing
    finally:
        loop.close()


@given(
    values=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125),
    before=_FRAMES,
    after=st.binary(max_size=40),
    cuts=_CUTS,
    unit=st.integers(0, 255),
    skip=st.integers(0, 0xFFFF),
)
# regression: a reply and a bad header in one read lost the reply with the bad bytes
@example(values=[0], before=[], after=bytes(7), cuts=[], unit=0, skip=0)
@settings(max_examples=200)
def test_a_valid_reply_among_late_ones_gives_back_exactly_its_registers(
    *,
    values: list[int],
    before: list[tuple[int, int, bytes]],
    after: bytes,
    cuts: list[int],
    unit: int,
    skip: int,
) -> None:
    client, transport, replies, tid, loop = _client_with_request(40_000, len(values), unit, skip)
    try:
        late = [(t, u, p) for t, u, p in before if (t, u) != (tid, unit)]
        stream = b"".join(_frame(t, u, p) for t, u, p in late)
        stream += _frame(tid, unit, _read_reply(values)) + after
        for chunk in _chunks(stream, cuts):
            client.data_received(chunk)
        assert len(replies) == 1
        reply: Any = replies[0]
        assert registers(reply) == values
        assert client.discarded >= len(late) or transport.closing
    finally:
        loop.close()


@given(pdu=st.binary(min_size=1, max_size=253), unit=st.integers(0, 255))
@example(pdu=b"\x83\x02", unit=1)
@example(pdu=b"\x90\x04", unit=1)
@settings(max_examples=200)
def test_any_reply_under_the_right_id_settles_the_request_with_registers_or_an_error(
    pdu: bytes, unit: int
) -> None:
    client, _transport, replies, tid, loop = _client_with_request(40_000, 2, unit, 0)
    try:
        client.data_received(_frame(tid, unit, pdu))
        assert len(replies) == 1
        reply = replies[0]
        if isinstance(reply, bytes):
            assert pdu == b"\x03\x04" + reply
        else:
            assert isinstance(reply, DeviceError | IllegalAddress)
    finally:
        loop.close()
