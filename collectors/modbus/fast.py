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

- ``encode_read_request`` / ``FrameBuffer`` / ``decode_read_response`` (pure, no I/O, in
  :mod:`collectors.modbus.frames`, re-exported here):
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
- ``Ticker`` (:mod:`collectors.modbus.ticker`, re-exported): the fleet's poll slots and
  request deadlines on one loop timer.

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
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from collectors.modbus.frames import (
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_FUNCTION,
    MAX_READ_WRITE_REGISTERS,
    MAX_WRITE_REGISTERS,
    READ_HOLDING_REGISTERS,
    READ_WRITE_MULTIPLE_REGISTERS,
    WRITE_MULTIPLE_REGISTERS,
    DeviceError,
    FrameBuffer,
    GarbledReply,
    NotModbusTcp,
    decode_read_response,
    decode_read_write_response,
    decode_write_response,
    encode_read_request,
    encode_read_write_request,
    encode_write_request,
    registers,
)
from collectors.modbus.ticker import DEFAULT_TICK_S, Ticker
from gridflex.sunspec.discovery import IllegalAddress, ReadRegisters

__all__ = [
    "DEFAULT_TICK_S",
    "ILLEGAL_DATA_ADDRESS",
    "ILLEGAL_FUNCTION",
    "MAX_READ_WRITE_REGISTERS",
    "MAX_WRITE_REGISTERS",
    "READ_HOLDING_REGISTERS",
    "READ_WRITE_MULTIPLE_REGISTERS",
    "WRITE_MULTIPLE_REGISTERS",
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
