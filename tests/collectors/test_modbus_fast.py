"""The lean Modbus TCP client: codec (pure), ticker, and the client over real sockets."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.modbus.fast import (
    DeviceError,
    FrameBuffer,
    GarbledReply,
    LeanModbusClient,
    NotModbusTcp,
    Reply,
    Ticker,
    decode_read_response,
    decode_write_response,
    encode_read_request,
    encode_write_request,
    registers,
)
from collectors.modbus.poller import classify_failure
from gridflex.net import free_port, free_port_block
from gridflex.sunspec.discovery import DiscoveryError, IllegalAddress
from simulators.inverter import InverterFleet

# --------------------------------------------------------------------------- codec


def test_write_request_is_an_mbap_frame_for_function_16() -> None:
    frame = encode_write_request(tid=5, unit_id=1, address=40366, values=[1, 0xFFFF])
    #                  tid    proto  length unit fc  address               count  bytes
    assert frame == bytes([0, 5, 0, 0, 0, 11, 1, 16]) + struct.pack(">HHB", 40366, 2, 4) + (
        bytes([0, 1, 0xFF, 0xFF])
    )


@given(
    tid=st.integers(0, 0xFFFF),
    unit=st.integers(0, 247),
    address=st.integers(0, 0xFFFF - 123),
    values=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=123),
)
@settings(max_examples=200)
def test_write_requests_parse_back_as_modbus_tcp(
    tid: int, unit: int, address: int, values: list[int]
) -> None:
    frame = encode_write_request(tid, unit, address, values)
    frames = FrameBuffer().feed(frame)  # the MBAP length is consistent with the PDU
    assert [(t, u) for t, u, _ in frames] == [(tid, unit)]
    pdu = frames[0][2]
    fc, echoed_address, count, nbytes = struct.unpack_from(">BHHB", pdu)
    assert (fc, echoed_address, count, nbytes) == (16, address, len(values), 2 * len(values))
    assert registers(pdu[6:]) == values


@pytest.mark.parametrize(
    ("values", "address"), [([], 40000), ([0] * 124, 40000), ([0x10000], 40000), ([1, 2], 65535)]
)
def test_write_request_outside_the_protocol_limits_is_refused(
    values: list[int], address: int
) -> None:
    with pytest.raises(ValueError, match=r"registers|values"):
        encode_write_request(1, 1, address, values)


def test_write_response_must_echo_the_address_and_count() -> None:
    decode_write_response(bytes([16]) + struct.pack(">HH", 40366, 4), 40366, 4)
    with pytest.raises(DeviceError, match="echoed 3 at 40366"):
        decode_write_response(bytes([16]) + struct.pack(">HH", 40366, 3), 40366, 4)
    with pytest.raises(DeviceError) as info:
        decode_write_response(bytes([0x90, 2]), 40366, 4)  # a refused write: not discovery
    assert info.value.code == 2
    with pytest.raises(DeviceError, match="unexpected reply"):
        decode_write_response(bytes([3, 2, 0, 0]), 40366, 1)


def test_read_request_is_an_mbap_frame_for_function_3() -> None:
    frame = encode_read_request(tid=0x0102, unit_id=7, address=40070, count=40)
    #                   tid        proto    length  unit fc  address      count
    assert frame == bytes([1, 2, 0, 0, 0, 6, 7, 3]) + struct.pack(">HH", 40070, 40)


@pytest.mark.parametrize(("address", "count"), [(40000, 0), (40000, 126), (65535, 2)])
def test_read_request_outside_the_protocol_limits_is_refused(address: int, count: int) -> None:
    with pytest.raises(ValueError, match=r"registers|count"):
        encode_read_request(1, 1, address, count)


def test_normal_response_gives_the_register_bytes() -> None:
    pdu = bytes([3, 4]) + struct.pack(">HH", 0x5375, 0x6E53)
    data = decode_read_response(pdu, 40000, 2)
    assert registers(data) == [0x5375, 0x6E53]


def test_exception_2_is_an_illegal_address_for_discovery() -> None:
    with pytest.raises(IllegalAddress):
        decode_read_response(bytes([0x83, 2]), 0, 2)


def test_other_exceptions_are_device_errors_with_the_modbus_code() -> None:
    with pytest.raises(DeviceError) as info:
        decode_read_response(bytes([0x83, 4]), 40000, 2)
    assert info.value.code == 4


@pytest.mark.parametrize(
    "pdu",
    [
        bytes([4, 4, 0, 1, 0, 2]),  # function 4 answering a function-3 read
        bytes([3, 2, 0, 1]),  # one register where two were asked
        bytes([3, 4, 0, 1, 0]),  # byte count says 4, 3 bytes follow
        b"",
    ],
)
def test_wrong_function_or_length_is_a_device_error(pdu: bytes) -> None:
    with pytest.raises(DeviceError):
        decode_read_response(pdu, 40000, 2)


def _frame(tid: int, unit: int, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def test_frames_split_and_joined_by_tcp_are_reassembled() -> None:
    a, b = _frame(1, 1, bytes([3, 2, 0, 7])), _frame(2, 1, bytes([0x83, 2]))
    stream = a + b
    frames = FrameBuffer()
    got = frames.feed(stream[:5])  # half a header
    got += frames.feed(stream[5 : len(a) + 3])  # rest of the first, start of the second
    got += frames.feed(stream[len(a) + 3 :])
    assert got == [(1, 1, bytes([3, 2, 0, 7])), (2, 1, bytes([0x83, 2]))]


def test_a_stream_that_is_not_modbus_tcp_is_refused() -> None:
    with pytest.raises(DeviceError, match="not a Modbus TCP"):
        FrameBuffer().feed(b"HTTP/1.1 400 Bad Request\r\n")


# --------------------------------------------------------------------------- ticker


def test_ticker_runs_entries_in_due_order_and_never_early() -> None:
    async def scenario() -> list[tuple[str, bool]]:
        loop = asyncio.get_running_loop()
        ticker = Ticker(loop, tick_s=0.001)
        ran: list[tuple[str, bool]] = []
        done = asyncio.Event()
        t0 = loop.time()

        def entry(name: str, due_s: float) -> None:
            ran.append((name, loop.time() >= due_s))
            if len(ran) == 4:
                done.set()

        for name, delay_s in [("c", 0.03), ("a", 0.01), ("d", 0.04), ("b", 0.02)]:
            ticker.call_at(t0 + delay_s, entry, name, t0 + delay_s)
        await asyncio.wait_for(done.wait(), 5)
        ticker.close()
        return ran

    assert asyncio.run(scenario()) == [("a", True), ("b", True), ("c", True), ("d", True)]


class _ManualClock:
    """The part of an event loop the Ticker uses, on a clock the test moves (no real time)."""

    class _Timer:
        def __init__(self, clock: _ManualClock, when_s: float, callback: Callable[[], None]):
            self.when_s, self.callback, self.cancelled = when_s, callback, False
            clock.timers.append(self)

        def cancel(self) -> None:
            self.cancelled = True

    def __init__(self) -> None:
        self.now_s = 0.0
        self.timers: list[_ManualClock._Timer] = []

    def time(self) -> float:
        return self.now_s

    def call_at(self, when_s: float, callback: Callable[[], None]) -> _ManualClock._Timer:
        return self._Timer(self, when_s, callback)

    def armed_s(self) -> float:
        """When the one live timer fires (the Ticker keeps at most one)."""
        (live,) = [t for t in self.timers if not t.cancelled]
        return live.when_s

    def run_until(self, when_s: float) -> None:
        """Move the clock to ``when_s``, firing every timer due by then in time order."""
        while True:
            due = [t for t in self.timers if not t.cancelled and t.when_s <= when_s]
            if not due:
                break
            timer = min(due, key=lambda t: t.when_s)
            self.timers.remove(timer)
            self.now_s = max(self.now_s, timer.when_s)
            timer.callback()
        self.now_s = when_s


def test_ticker_entries_due_within_one_tick_run_together_in_the_next_pass() -> None:
    clock = _ManualClock()
    ticker = Ticker(clock, tick_s=0.05)  # type: ignore[arg-type]  # the loop's clock part
    ran: list[tuple[float, float]] = []  # (due, when it ran)
    first_s = 0.010
    dues = [first_s + i * 0.005 for i in range(4)]  # 10, 15, 20, 25 ms: within one tick
    for due_s in dues:
        ticker.call_at(due_s, lambda d=due_s: ran.append((d, clock.time())))
    assert clock.armed_s() == first_s
    clock.run_until(0.030)
    assert ran == [(first_s, first_s)]  # the first pass: only the entry due then
    assert clock.armed_s() == pytest.approx(first_s + 0.05)  # the next pass, a tick later
    clock.run_until(0.100)
    assert [due for due, _ in ran] == dues
    assert [when for _, when in ran[1:]] == [pytest.approx(first_s + 0.05)] * 3  # together
    assert all(when >= due for due, when in ran)  # never early
    ticker.close()


def test_a_failing_ticker_entry_does_not_stop_the_others() -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        ticker = Ticker(loop)
        ran: list[str] = []
        done = asyncio.Event()

        def boom() -> None:
            raise RuntimeError("broken entry")

        ticker.call_at(loop.time(), boom)
        ticker.call_at(loop.time() + 0.002, lambda: (ran.append("after"), done.set()))
        await asyncio.wait_for(done.wait(), 5)
        ticker.close()
        return ran

    assert asyncio.run(scenario()) == ["after"]


# --------------------------------------------------------------------------- client


@pytest.mark.integration
def test_reads_match_the_simulated_device_and_discovery_errors_map() -> None:
    base = free_port_block(1)

    async def scenario() -> None:
        async with InverterFleet(1, base, seed=3) as fleet:
            client = LeanModbusClient("127.0.0.1", base, timeout_s=2)
            await client.connect()
            device = fleet.devices[0]
            assert await client.read(40000, 40) == device.read(40000, 40)
            read = client.reader(1)
            assert list(await read(40070, 50)) == device.read(40070, 50)
            with pytest.raises(IllegalAddress):
                await read(0, 2)  # below the map: exception 2
            with pytest.raises(DeviceError) as info:
                await client.read(40000, 2, unit_id=9)  # no such unit behind this address
            assert info.value.code == 0x0B
            # a write, then the same registers read back
            wset = device.address_of(704, "WSetEna")
            await client.write(wset, [1, 1, 0xFFFF, 0xF830])  # enabled, watts, -2000
            assert device.decode_point(704, "WSet") == -2_000
            assert await client.read(wset, 4) == [1, 1, 0xFFFF, 0xF830]
            with pytest.raises(DeviceError):
                await client.write(40000, [0])  # the SunS marker is read-only
            client.close()

    asyncio.run(scenario())


class _FakeDevice(asyncio.Protocol):
    """A Modbus TCP peer under the test's control: it answers only when told to."""

    def __init__(self, requests: asyncio.Queue[tuple[int, bytes]]) -> None:
        self.requests = requests
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        tid = struct.unpack_from(">H", data)[0]
        self.requests.put_nowait((tid, data))


@asynccontextmanager
async def _fake_device() -> AsyncIterator[
    tuple[int, asyncio.Queue[tuple[int, bytes]], Callable[[], _FakeDevice]]
]:
    port = free_port()
    requests: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    peers: list[_FakeDevice] = []

    def factory() -> _FakeDevice:
        peers.append(_FakeDevice(requests))
        return peers[-1]

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", port)
    try:
        yield port, requests, lambda: peers[-1]
    finally:
        server.close()
        for peer in peers:
            if peer.transport is not None:
                peer.transport.abort()
        await server.wait_closed()


@pytest.mark.integration
def test_no_reply_times_out_and_the_late_reply_is_discarded() -> None:
    async def scenario() -> None:
        async with _fake_device() as (port, requests, peer):
            client = LeanModbusClient("127.0.0.1", port, timeout_s=0.2)
            await client.connect()
            with pytest.raises(TimeoutError):
                await client.read(40000, 1)
            late_tid, _ = await requests.get()
            reply = asyncio.get_running_loop().create_future()
            client.request(40000, 1, 1, reply.set_result)
            tid, _ = await requests.get()
            transport = peer().transport
            assert transport is not None
            transport.write(_frame(late_tid, 1, bytes([3, 2, 0, 99])))  # too late
            transport.write(_frame(tid, 1, bytes([3, 2, 0, 7])))
            assert registers(await reply) == [7]
            assert client.discarded == 1
            client.close()

    asyncio.run(scenario())


@pytest.mark.integration
@pytest.mark.parametrize(
    "answer",
    [
        lambda tid: _frame(tid + 1, 1, bytes([3, 2, 0, 7])),
        lambda tid: _frame(tid, 9, bytes([3, 2, 0, 7])),
        lambda tid: _frame(tid, 1, bytes([3, 2, 0, 7]))[:9],
    ],
    ids=["another-transaction", "another-unit", "truncated"],
)
def test_a_timeout_with_bytes_that_were_not_the_reply_is_a_garbled_reply(
    answer: Callable[[int], bytes],
) -> None:
    async def scenario() -> None:
        async with _fake_device() as (port, requests, peer):
            client = LeanModbusClient("127.0.0.1", port, timeout_s=0.3)
            await client.connect()
            pending = client.read(40000, 1)
            tid, _ = await requests.get()
            transport = peer().transport
            assert transport is not None
            transport.write(answer(tid))
            with pytest.raises(GarbledReply, match="bytes came that were not it"):
                await pending
            assert classify_failure(GarbledReply("x")) == "garbage"
            client.close()

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_timeout_with_nothing_in_reply_is_plain_silence() -> None:
    async def scenario() -> None:
        async with _fake_device() as (port, requests, _peer):
            client = LeanModbusClient("127.0.0.1", port, timeout_s=0.2)
            await client.connect()
            with pytest.raises(TimeoutError) as raised:
                await client.read(40000, 1)
            assert not isinstance(raised.value, GarbledReply)
            assert classify_failure(raised.value) == "silent"
            await requests.get()
            client.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TimeoutError("no reply"), "silent"),
        (ConnectionRefusedError("refused"), "silent"),
        (ConnectionResetError("reset"), "silent"),
        (GarbledReply("another transaction's frame"), "garbage"),
        (DeviceError("Modbus exception 4", 4), "garbage"),
        (NotModbusTcp("protocol 7", []), "garbage"),
        (IllegalAddress(40000), "garbage"),
        (DiscoveryError("no SunSpec marker"), "garbage"),
        (KeyError("bug"), "internal"),
    ],
)
def test_a_failure_is_silence_garbage_or_a_bug(exc: BaseException, kind: str) -> None:
    assert classify_failure(exc) == kind


@pytest.mark.integration
def test_a_lost_connection_fails_the_request_in_flight_and_later_ones() -> None:
    async def scenario() -> None:
        async with _fake_device() as (port, requests, peer):
            client = LeanModbusClient("127.0.0.1", port, timeout_s=5)
            await client.connect()
            pending = client.read(40000, 1)
            await requests.get()
            transport = peer().transport
            assert transport is not None
            transport.abort()
            with pytest.raises(ConnectionError):
                await pending
            assert not client.connected
            got: list[Reply] = []
            client.request(40000, 1, 1, got.append)
            await asyncio.sleep(0)  # reported on the next loop pass, not re-entrantly
            assert len(got) == 1 and isinstance(got[0], ConnectionError)

    asyncio.run(scenario())


@pytest.mark.integration
def test_a_second_request_while_one_is_in_flight_is_a_programming_error() -> None:
    async def scenario() -> None:
        async with _fake_device() as (port, _requests, _peer):
            client = LeanModbusClient("127.0.0.1", port, timeout_s=5)
            await client.connect()
            client.request(40000, 1, 1, lambda _reply: None)
            with pytest.raises(RuntimeError, match="one Modbus request at a time"):
                client.request(40000, 1, 1, lambda _reply: None)
            client.close()

    asyncio.run(scenario())


@pytest.mark.integration
def test_timeouts_kept_by_a_ticker_fire_too() -> None:
    async def scenario() -> None:
        async with _fake_device() as (port, _requests, _peer):
            loop = asyncio.get_running_loop()
            ticker = Ticker(loop)
            client = LeanModbusClient("127.0.0.1", port, timeout_s=0.1, ticker=ticker)
            await client.connect()
            with pytest.raises(TimeoutError):
                await client.read(40000, 1)
            client.close()
            ticker.close()

    asyncio.run(scenario())


@pytest.mark.integration
def test_connecting_to_a_closed_port_raises_oserror() -> None:
    async def scenario() -> None:
        client = LeanModbusClient("127.0.0.1", free_port(), timeout_s=2)
        with pytest.raises(OSError):
            await client.connect()

    asyncio.run(scenario())
