"""A lean Modbus TCP client for the hot paths: functions 3 and 16 over an asyncio Protocol.

The collector polls every inverter every 200 ms; at 1,000 inverters that is 5,000 reads a
second from one process. Why the hot path does not use pymodbus' async client: per read
it runs a transaction manager, a ``wait_for`` and a lock, its framer and PDU decoder
classes and debug formatting, and the caller needs a coroutine and a task wake-up per
read. Measured on this project's 2-core VM against the simulator (CPU time of the
reading process, syscalls included, a noisy shared machine): 65-97 us per read over
200 connections with pymodbus, 47-62 us with this client's ``read()`` (a future) and
~44 us with its ``request()`` callback; on one connection, latency-bound, 136-161 us
against 91-97 us. In the collector at N = 1,000 pymodbus' request path was ~30 % of the
process' samples (py-spy). This client does only what a SunSpec poll needs:

- ``encode_read_request`` / ``FrameBuffer`` / ``decode_read_response`` (pure, no I/O):
  MBAP framing (transaction id, protocol 0, length, unit id), function 3 requests, normal
  and exception responses (an exception 2 raises ``IllegalAddress`` for SunSpec discovery,
  any other exception a ``DeviceError`` carrying the Modbus exception ``code``);
- ``LeanModbusClient``: one TCP connection as an ``asyncio.Protocol``, one request in flight
  (Modbus devices answer one at a time per connection), replies matched by transaction
  id (a late reply to a timed-out request is discarded), a timeout per request
  (``TimeoutError``; ``GarbledReply``, a ``TimeoutError`` too, when bytes came meanwhile
  that were not the reply: the device is there but talks nonsense), and
  ``ConnectionError`` once the connection is gone. ``read()``
  returns an awaitable future (the collector's ``ReadRegisters`` for discovery);
  ``request()`` calls back with the register bytes straight from ``data_received`` (the
  poll loop);
- ``Ticker``: the fleet's poll slots and request deadlines on one loop timer.

It also writes (function 16, ``write()``) and writes-then-reads in one request (function
23, Read/Write Multiple Registers, ``read_write()``): at a frequency step every asset gets
a command within one poll period, and the control writer (``control.modbus_client``) uses
this client for its one round trip per command (write ``WSet`` and read the 704 block
back; function 16 then 3 for a device that does not implement 23). It is the only Modbus
client of the commands; pymodbus' client is the reference it is tested against (against
pymodbus' own server too, ``tests/collectors/test_modbus_fast_vs_pymodbus.py``) and the
benchmarks' baseline (``bench/baselines.py``, run by ``bench/poll.py`` and
``bench/closed_loop.py``; the tables are in ``bench/README.md``).

Reference: Modbus Application Protocol Specification V1.1b3, sections 4.1 (PDU), 6.3
(Read Holding Registers), 6.12 (Write Multiple Registers), 6.17 (Read/Write Multiple
Registers: the write is performed before the read) and 7 (exception responses); Modbus
Messaging on TCP/IP Implementation Guide V1.0b, section 3.1.3 (MBAP header).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from gridflex.sunspec.discovery import MAX_READ_REGISTERS, IllegalAddress, ReadRegisters

__all__ = [
    "DEFAULT_TICK_S",
    "ILLEGAL_DATA_ADDRESS",
    "ILLEGAL_FUNCTION",
    "DeviceError",
    "FrameBuffer",
    "GarbledReply",
    "LeanModbusClient",
    "NotModbusTcp",
    "Reply",
    "ReplyCallback",
    "Ticker",
    "decode_read_response",
    "decode_read_write_response",
    "decode_write_response",
    "encode_read_request",
    "encode_read_write_request",
    "encode_write_request",
    "registers",
]

log = logging.getLogger(__name__)

READ_HOLDING_REGISTERS = 3
WRITE_MULTIPLE_REGISTERS = 16
READ_WRITE_MULTIPLE_REGISTERS = 23
ILLEGAL_FUNCTION = 1
#: Most registers one function-16 request may write (Modbus spec 6.12).
MAX_WRITE_REGISTERS = 123
#: Most registers one function-23 request may write (Modbus spec 6.17); it reads up to 125.
MAX_READ_WRITE_REGISTERS = 121
ILLEGAL_DATA_ADDRESS = 2
_EXCEPTION_BIT = 0x80
_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id
_READ_REQUEST = struct.Struct(">HHHBBHH")  # MBAP + function, address, count
#: MBAP + function 23, read address and count, write address, count and byte count.
_READ_WRITE_HEADER = struct.Struct(">HHHBBHHHHB")
_MAX_MBAP_LENGTH = 254  # unit id + PDU of at most 253 bytes
_REGISTERS = [struct.Struct(f">{n}H") for n in range(MAX_READ_REGISTERS + 1)]
#: Default ``Ticker`` granularity: the longest a poll waits to go out with its tick's burst.
DEFAULT_TICK_S = 0.002
# asyncio runs a timer up to its clock resolution early; an entry that close is due.
_CLOCK_SLACK_S = 1e-6


class DeviceError(Exception):
    """A device answered, but not usably (Modbus exception, wrong length, bad map).

    ``code`` is the Modbus exception code when the device answered with an exception
    response (1 illegal function, 2 illegal data address, 3 illegal data value, ...).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class GarbledReply(TimeoutError):
    """No reply to the request in time, but bytes that were not its reply came meanwhile.

    Another transaction's or unit's frame, a truncated frame: the device answered, not
    usably. A ``TimeoutError`` (the poll loop treats it like one: the next slot is tried on
    the same connection), told apart so that a device answering garbage is not taken for a
    silent one (``collectors.modbus.poller.classify_failure``).
    """


# --------------------------------------------------------------------------- pure: codec


def encode_read_request(tid: int, unit_id: int, address: int, count: int) -> bytes:
    """MBAP frame of a function-3 request for ``count`` registers from ``address``."""
    if not 1 <= count <= MAX_READ_REGISTERS:
        raise ValueError(f"count {count}: a read returns 1..{MAX_READ_REGISTERS} registers")
    if not 0 <= address <= 0xFFFF - count + 1:
        raise ValueError(f"registers {address}..{address + count - 1} are outside 0..65535")
    return _READ_REQUEST.pack(tid, 0, 6, unit_id, READ_HOLDING_REGISTERS, address, count)


def decode_read_response(pdu: bytes, address: int, count: int) -> bytes:
    """Register data (``2 * count`` big-endian bytes) of a function-3 response PDU.

    ``pdu`` starts with the function code. Raises ``IllegalAddress`` for Modbus exception
    2, ``DeviceError`` (with ``code``) for other exception responses, and ``DeviceError``
    for a reply of the wrong function or length.
    """
    if len(pdu) == 2 and pdu[0] == READ_HOLDING_REGISTERS | _EXCEPTION_BIT:
        code = pdu[1]
        if code == ILLEGAL_DATA_ADDRESS:
            raise IllegalAddress(address)
        raise DeviceError(f"Modbus exception {code} reading {count} at {address}", code)
    if len(pdu) < 2 or pdu[0] != READ_HOLDING_REGISTERS:
        raise DeviceError(f"unexpected reply (function {pdu[0] if pdu else None}) to a read")
    if pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
        raise DeviceError(
            f"asked {count} registers at {address}, got {(len(pdu) - 2) // 2} "
            f"with a byte count of {pdu[1]}"
        )
    return pdu[2:]


def encode_write_request(tid: int, unit_id: int, address: int, values: list[int]) -> bytes:
    """MBAP frame of a function-16 request writing ``values`` (16-bit) from ``address``."""
    count = len(values)
    if not 1 <= count <= MAX_WRITE_REGISTERS:
        raise ValueError(f"{count} registers: a write takes 1..{MAX_WRITE_REGISTERS}")
    if not 0 <= address <= 0xFFFF - count + 1:
        raise ValueError(f"registers {address}..{address + count - 1} are outside 0..65535")
    if any(not 0 <= v <= 0xFFFF for v in values):
        raise ValueError(f"register values must be 0..65535, got {values}")
    header = struct.pack(
        ">HHHBBHHB", tid, 0, 7 + 2 * count, unit_id, WRITE_MULTIPLE_REGISTERS, address, count,
        2 * count,
    )  # fmt: skip
    return header + _REGISTERS[count].pack(*values)


def decode_write_response(pdu: bytes, address: int, count: int) -> None:
    """Check a function-16 response PDU: it must echo ``address`` and ``count``.

    Raises ``DeviceError`` (with ``code``) for an exception response (an exception 2 too:
    a refused write is not a discovery probe) and for a reply that echoes something else.
    """
    if len(pdu) == 2 and pdu[0] == WRITE_MULTIPLE_REGISTERS | _EXCEPTION_BIT:
        code = pdu[1]
        raise DeviceError(f"Modbus exception {code} writing {count} at {address}", code)
    if len(pdu) != 5 or pdu[0] != WRITE_MULTIPLE_REGISTERS:
        raise DeviceError(f"unexpected reply (function {pdu[0] if pdu else None}) to a write")
    echoed_address, echoed_count = struct.unpack(">HH", pdu[1:5])
    if (echoed_address, echoed_count) != (address, count):
        raise DeviceError(
            f"wrote {count} at {address}, the device echoed {echoed_count} at {echoed_address}"
        )


def encode_read_write_request(
    tid: int,
    unit_id: int,
    *,
    read_address: int,
    read_count: int,
    write_address: int,
    values: list[int],
) -> bytes:
    """MBAP frame of a function-23 request: write, then read, in one transaction.

    The device writes ``values`` from ``write_address``, then answers with ``read_count``
    registers from ``read_address`` (spec 6.17: the write is performed before the read).
    """
    count = len(values)
    if not 1 <= read_count <= MAX_READ_REGISTERS:
        raise ValueError(f"read count {read_count}: a read returns 1..{MAX_READ_REGISTERS}")
    if not 1 <= count <= MAX_READ_WRITE_REGISTERS:
        raise ValueError(f"{count} registers: a read/write takes 1..{MAX_READ_WRITE_REGISTERS}")
    for address, n in ((read_address, read_count), (write_address, count)):
        if not 0 <= address <= 0xFFFF - n + 1:
            raise ValueError(f"registers {address}..{address + n - 1} are outside 0..65535")
    if min(values) < 0 or max(values) > 0xFFFF:
        raise ValueError(f"register values must be 0..65535, got {values}")
    header = _READ_WRITE_HEADER.pack(
        tid, 0, 11 + 2 * count, unit_id, READ_WRITE_MULTIPLE_REGISTERS,
        read_address, read_count, write_address, count, 2 * count,
    )  # fmt: skip
    return header + _REGISTERS[count].pack(*values)


def decode_read_write_response(pdu: bytes, address: int, count: int) -> bytes:
    """Register data (``2 * count`` bytes) of a function-23 response PDU (the read part).

    Raises ``DeviceError`` (with ``code``) for an exception response, exception 2 too (a
    refused write is not a discovery probe; exception 1, illegal function, is a device
    without function 23), and for a reply of the wrong function or length.
    """
    if len(pdu) == 2 and pdu[0] == READ_WRITE_MULTIPLE_REGISTERS | _EXCEPTION_BIT:
        code = pdu[1]
        raise DeviceError(f"Modbus exception {code} to a read/write of {count} at {address}", code)
    if len(pdu) < 2 or pdu[0] != READ_WRITE_MULTIPLE_REGISTERS:
        raise DeviceError(f"unexpected reply (function {pdu[0] if pdu else None}) to a read/write")
    if pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
        raise DeviceError(
            f"asked {count} registers at {address}, got {(len(pdu) - 2) // 2} "
            f"with a byte count of {pdu[1]}"
        )
    return pdu[2:]


def registers(data: bytes) -> list[int]:
    """The 16-bit registers in big-endian register ``data``."""
    return list(_REGISTERS[len(data) // 2].unpack(data))


class NotModbusTcp(DeviceError):
    """The byte stream broke off: ``frames`` are the complete frames that came before."""

    def __init__(self, message: str, frames: list[tuple[int, int, bytes]]) -> None:
        super().__init__(message)
        self.frames = frames


class FrameBuffer:
    """Reassembles MBAP frames from a TCP byte stream (pure: bytes in, frames out)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Add ``data``; return the complete frames as ``(transaction id, unit id, PDU)``.

        An incomplete frame stays buffered for the next call. Raises ``NotModbusTcp`` (a
        ``DeviceError``) when the stream is not Modbus TCP (protocol id not 0 or an
        impossible length): the connection cannot be resynchronised after that, and the
        buffer is dropped; the frames complete before the bad bytes are on the exception.
        """
        buf = self._buffer
        buf += data
        frames: list[tuple[int, int, bytes]] = []
        start = 0
        while len(buf) - start >= _MBAP.size:
            tid, protocol, length, unit = _MBAP.unpack_from(buf, start)
            if protocol != 0 or not 2 <= length <= _MAX_MBAP_LENGTH:
                buf.clear()
                raise NotModbusTcp(
                    f"not a Modbus TCP reply (protocol {protocol}, length {length})", frames
                )
            end = start + 6 + length
            if len(buf) < end:
                break
            frames.append((tid, unit, bytes(buf[start + _MBAP.size : end])))
            start = end
        del buf[:start]
        return frames


# --------------------------------------------------------------------------- I/O


class Ticker:
    """Runs callbacks at their due time, batched in ticks, on one event-loop timer.

    An entry is a plain tuple in a ``heapq`` (compared in C) and one loop timer is armed
    for the earliest entry, at most once per ``tick_s``: when it fires, every entry that
    is due runs in the same pass, and the next pass comes ``tick_s`` later at the
    earliest. So an entry never runs before its due time, and after it by at most
    ``tick_s`` plus what else the loop is busy with.

    Why, measured on the 2-core VM at 1,000 inverters: asyncio keeps one ``TimerHandle``
    per ``call_at`` in a heap compared by a Python ``__lt__`` (a poll slot and a request
    deadline per poll, 10,000 a second, ~8 % of the collector's samples), and each time
    the loop goes idle and wakes up again costs ~100 us of CPU (an idle loop woken every
    millisecond used 6 % of a core). Polls spread evenly over the interval woke the
    collector, the simulators and the broker for nearly every poll; due together, the
    polls of one tick go out in one burst, their replies and their MQTT messages come
    back in bursts too, and every process wakes up once per burst.

    There is no cancellation: a callback that is no longer wanted checks its own state
    and returns (a stale entry costs one tuple until it is due).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, tick_s: float = DEFAULT_TICK_S) -> None:
        self.tick_s = tick_s
        self._loop = loop
        self._heap: list[tuple[float, int, Callable[..., object], tuple[object, ...]]] = []
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._armed_s = math.inf
        self._next_pass_s = -math.inf  # no pass before this (one per tick)
        self._closed = False

    def call_at(self, when_s: float, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` once ``loop.time()`` reaches ``when_s`` (loop clock)."""
        self._seq += 1
        heapq.heappush(self._heap, (when_s, self._seq, callback, args))
        if when_s < self._armed_s:
            self._arm(max(when_s, self._next_pass_s))

    def close(self) -> None:
        """Drop every entry and the loop timer."""
        self._closed = True
        self._heap.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, when_s: float) -> None:
        if self._closed or when_s >= self._armed_s:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._armed_s = when_s
        self._timer = self._loop.call_at(when_s, self._run)

    def _run(self) -> None:
        self._timer = None
        self._armed_s = -math.inf  # entries added by the callbacks do not re-arm meanwhile
        heap = self._heap
        now_s = self._loop.time()
        due_s = now_s + _CLOCK_SLACK_S
        while heap and heap[0][0] <= due_s:
            _when, _seq, callback, args = heapq.heappop(heap)
            try:
                callback(*args)
            except Exception:  # one broken callback must not stop the others' schedule
                log.exception("ticker callback %r failed", callback)
        self._armed_s = math.inf
        self._next_pass_s = now_s + self.tick_s
        if heap:
            self._arm(max(heap[0][0], self._next_pass_s))


Reply = bytes | Exception
ReplyCallback = Callable[[Reply], None]


@dataclass(slots=True)
class _Request:
    """The one request in flight on a connection."""

    tid: int
    unit_id: int
    address: int
    count: int
    callback: ReplyCallback
    timer: asyncio.TimerHandle | None
    function: int = READ_HOLDING_REGISTERS
    #: The connection's ``received`` byte count when the request was sent.
    received_at_send: int = 0


def _settle(future: asyncio.Future[list[int]], reply: Reply) -> None:
    """Resolve ``future`` with the registers of a reply or its exception, unless cancelled."""
    if future.done():
        return
    if isinstance(reply, Exception):
        future.set_exception(reply)
    else:
        future.set_result(registers(reply))


class LeanModbusClient(asyncio.Protocol):
    """One Modbus TCP connection reading holding registers (function 3), one request at a time.

    ``await client.connect()`` (raises ``OSError``/``TimeoutError``), then either
    ``await client.read(address, count, unit_id)`` (or ``client.reader(unit_id)``, the
    collector's ``ReadRegisters``) for the registers, or ``client.request(address, count,
    unit_id, callback)``, which calls ``callback`` with the register data (``bytes``) or
    the exception straight from the protocol callback: no future, no task wake-up (the
    poll loop's hot path). Request deadlines go to ``ticker`` when given (one loop timer
    for the whole fleet), else to a loop timer per request. ``close()`` ends it. Not
    thread-safe: use it from its event loop.
    """

    def __init__(
        self, host: str, port: int, *, timeout_s: float = 1.0, ticker: Ticker | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        #: Replies that matched no request in flight (late replies to timed-out requests).
        self.discarded = 0
        #: Bytes received on this connection.
        self.received = 0
        self._ticker = ticker
        self._transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._frames = FrameBuffer()
        self._request: _Request | None = None
        self._tid = 0
        self._lost: Exception | None = None

    # ---------------------------------------------------------------- lifecycle

    async def connect(self) -> None:
        """Open the TCP connection (bounded by ``timeout_s``)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._lost = None
        async with asyncio.timeout(self.timeout_s):
            await loop.create_connection(lambda: self, self.host, self.port)

    @property
    def connected(self) -> bool:
        """Whether the connection is open."""
        return self._transport is not None and not self._transport.is_closing()

    def close(self) -> None:
        """Close the connection; a request in flight fails with ``ConnectionError``."""
        if self._transport is not None:
            self._transport.close()
        self._fail(ConnectionError("connection closed by the collector"))

    # ---------------------------------------------------------------- requests

    def request(self, address: int, count: int, unit_id: int, callback: ReplyCallback) -> None:
        """Send a function-3 request; ``callback`` gets the register data or the error.

        The data are the ``2 * count`` big-endian bytes of the registers. Errors:
        ``IllegalAddress``/``DeviceError`` (see ``decode_read_response``),
        ``TimeoutError`` after ``timeout_s``, ``ConnectionError`` when the connection is
        (or gets) lost; an error found before sending is reported on the next loop pass.
        """
        loop = self._loop
        transport = self._transport
        assert loop is not None, "connect() first"
        if transport is None or transport.is_closing():
            loop.call_soon(callback, self._lost or ConnectionError("not connected to the device"))
            return
        if self._request is not None:
            raise RuntimeError("one Modbus request at a time per connection")
        self._tid = tid = (self._tid + 1) & 0xFFFF
        frame = encode_read_request(tid, unit_id, address, count)
        self._send(loop, transport, frame, _Request(tid, unit_id, address, count, callback, None))

    def _send(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        frame: bytes,
        request: _Request,
    ) -> None:
        deadline_s = loop.time() + self.timeout_s
        if self._ticker is not None:
            self._ticker.call_at(deadline_s, self._on_timeout, request.tid)
        else:
            request.timer = loop.call_at(deadline_s, self._on_timeout, request.tid)
        request.received_at_send = self.received
        self._request = request
        transport.write(frame)

    def write(self, address: int, values: list[int], unit_id: int = 1) -> asyncio.Future[None]:
        """Write ``values`` from ``address`` (function 16); resolves once the device echoed.

        Fails like ``request`` (``DeviceError`` for a refused write, ``TimeoutError``,
        ``ConnectionError``). One request at a time per connection, reads and writes alike.
        """
        loop = self._loop
        assert loop is not None, "connect() first"
        future: asyncio.Future[None] = loop.create_future()

        def settle(reply: Reply) -> None:
            if future.done():
                return
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(None)

        transport = self._transport
        if transport is None or transport.is_closing():
            settle(self._lost or ConnectionError("not connected to the device"))
            return future
        if self._request is not None:
            raise RuntimeError("one Modbus request at a time per connection")
        self._tid = tid = (self._tid + 1) & 0xFFFF
        frame = encode_write_request(tid, unit_id, address, values)
        request = _Request(tid, unit_id, address, len(values), settle, None)
        request.function = WRITE_MULTIPLE_REGISTERS
        self._send(loop, transport, frame, request)
        return future

    def read_write(
        self,
        read_address: int,
        read_count: int,
        write_address: int,
        values: list[int],
        unit_id: int = 1,
    ) -> asyncio.Future[list[int]]:
        """Write ``values``, then read ``read_count`` registers, in one request (function 23).

        Resolves to the registers read (after the write). Fails like ``write`` (a device
        without function 23 answers exception 1: ``DeviceError`` with ``code`` 1).
        """
        loop = self._loop
        assert loop is not None, "connect() first"
        future: asyncio.Future[list[int]] = loop.create_future()
        transport = self._transport
        if transport is None or transport.is_closing():
            future.set_exception(self._lost or ConnectionError("not connected to the device"))
            return future
        if self._request is not None:
            raise RuntimeError("one Modbus request at a time per connection")
        self._tid = tid = (self._tid + 1) & 0xFFFF
        frame = encode_read_write_request(
            tid,
            unit_id,
            read_address=read_address,
            read_count=read_count,
            write_address=write_address,
            values=values,
        )
        callback = functools.partial(_settle, future)
        request = _Request(tid, unit_id, read_address, read_count, callback, None)
        request.function = READ_WRITE_MULTIPLE_REGISTERS
        self._send(loop, transport, frame, request)
        return future

    def read(self, address: int, count: int, unit_id: int = 1) -> asyncio.Future[list[int]]:
        """``request`` as a future: resolves to the registers or fails with the error."""
        assert self._loop is not None, "connect() first"
        future: asyncio.Future[list[int]] = self._loop.create_future()
        self.request(address, count, unit_id, functools.partial(_settle, future))
        return future

    def reader(self, unit_id: int) -> ReadRegisters:
        """The collector's ``read(address, count)`` over this connection for ``unit_id``."""

        def read(address: int, count: int) -> asyncio.Future[list[int]]:
            return self.read(address, count, unit_id)

        return read

    # ---------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (called by asyncio)."""
        # a stream transport; not asserted with isinstance: other loops' transports
        # (uvloop's) implement the interface without subclassing asyncio.Transport
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the request in flight (called by asyncio)."""
        self._transport = None
        lost = ConnectionError(f"connection to {self.host}:{self.port} lost: {exc or 'closed'}")
        self._lost = lost
        self._fail(lost)

    def data_received(self, data: bytes) -> None:
        """Match each complete reply to the request in flight (called by asyncio)."""
        self.received += len(data)
        try:
            frames = self._frames.feed(data)
        except NotModbusTcp as exc:
            for tid, unit, pdu in exc.frames:  # replies that came before the bad bytes
                self._on_frame(tid, unit, pdu)
            self._fail(exc)
            if self._transport is not None:
                self._transport.abort()
            return
        for tid, unit, pdu in frames:
            self._on_frame(tid, unit, pdu)

    def _on_frame(self, tid: int, unit: int, pdu: bytes) -> None:
        request = self._request
        if request is None or tid != request.tid or unit != request.unit_id:
            self.discarded += 1
            log.debug(
                "%s:%d: discarded a reply (tid %d) nobody waits for", self.host, self.port, tid
            )
            return
        self._request = None
        if request.timer is not None:
            request.timer.cancel()
        reply: Reply
        try:
            if request.function == WRITE_MULTIPLE_REGISTERS:
                decode_write_response(pdu, request.address, request.count)
                reply = b""
            elif request.function == READ_WRITE_MULTIPLE_REGISTERS:
                reply = decode_read_write_response(pdu, request.address, request.count)
            else:
                reply = decode_read_response(pdu, request.address, request.count)
        except (DeviceError, IllegalAddress) as exc:
            reply = exc
        request.callback(reply)

    def _on_timeout(self, tid: int) -> None:
        request = self._request
        if request is None or request.tid != tid:
            return  # answered (or failed) in time: a stale deadline
        self._request = None
        what = {WRITE_MULTIPLE_REGISTERS: "write", READ_WRITE_MULTIPLE_REGISTERS: "read/write"}.get(
            request.function, "read"
        )
        text = (
            f"no reply from {self.host}:{self.port} to a {what} of {request.count} "
            f"at {request.address} within {self.timeout_s} s"
        )
        stray = self.received - request.received_at_send
        if stray:  # the device did answer, with something else
            request.callback(GarbledReply(f"{text}; {stray} bytes came that were not it"))
            return
        request.callback(TimeoutError(text))

    def _fail(self, exc: Exception) -> None:
        request = self._request
        if request is None:
            return
        self._request = None
        if request.timer is not None:
            request.timer.cancel()
        request.callback(exc)
