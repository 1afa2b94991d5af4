"""The lean Modbus client against pymodbus as the reference: pymodbus' server and client.

The lean client (``collectors.modbus.fast``) is the commands' only Modbus client; pymodbus
is the oracle. Every test here runs a real pymodbus ``ModbusTcpServer`` (its own
datastore, ``SimDevice``/``SimData``) on a free port and asks the same question through
the lean client and through pymodbus' ``AsyncModbusTcpClient``: the answers (registers,
or the Modbus exception code) must be the same, and the same as the datastore holds.
Writes by one client are read back by the other. The SunSpec discovery and a poll are
compared too, over a simulated inverter's register image served by pymodbus.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from bench.baselines import PymodbusConnection
from collectors.modbus.connection import discover_plan
from collectors.modbus.fast import DeviceError, LeanModbusClient, Reply
from collectors.modbus.plan import decode_data, decode_reading
from control.modbus_client import LeanRegisterClient
from gridflex.loop_thread import LoopThread
from gridflex.net import free_port, wait_for_port
from gridflex.sunspec.discovery import IllegalAddress
from simulators.inverter import BASE_ADDRESS, InverterModel, InverterRatings, SimulatedInverter

pytestmark = pytest.mark.integration

UNIT = 1
#: The server's holding registers: ``BLOCK_START`` .. ``BLOCK_START + BLOCK_SIZE - 1``.
BLOCK_START = 1000
BLOCK_SIZE = 300
#: Addresses the generated requests start at: the block, and a few registers either side.
ADDRESSES = st.integers(BLOCK_START - 10, BLOCK_START + BLOCK_SIZE + 10)

#: What a client got: ``("ok", registers)`` or ``("exception", Modbus exception code)``.
Outcome = tuple[str, Any]


async def _start_server(blocks: list[tuple[int, list[int]]]) -> tuple[ModbusTcpServer, int]:
    """pymodbus' TCP server for one device (``UNIT``) with these register blocks."""
    port = free_port()
    device = SimDevice(
        UNIT,
        simdata=[
            SimData(address=start, values=list(values), datatype=DataType.REGISTERS)
            for start, values in blocks
        ],
    )
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    return server, port


@dataclass
class Oracle:
    """pymodbus' server, the lean client and pymodbus' client, on one loop thread.

    ``shadow`` is what the server's datastore holds (the tests keep it up to date with
    their writes), the expectation both clients are held to.
    """

    lt: LoopThread
    server: ModbusTcpServer
    port: int
    lean: LeanModbusClient
    reference: AsyncModbusTcpClient
    shadow: dict[int, int] = field(default_factory=dict)

    def expected(self, address: int, count: int) -> Outcome:
        """The datastore's answer: the registers, or exception 2 (illegal data address)."""
        wanted = range(address, address + count)
        if all(a in self.shadow for a in wanted):
            return ("ok", [self.shadow[a] for a in wanted])
        return ("exception", 2)

    def lean_read(self, address: int, count: int, unit: int = UNIT) -> Outcome:
        async def read() -> Outcome:
            try:
                return ("ok", list(await self.lean.read(address, count, unit)))
            except IllegalAddress:
                return ("exception", 2)
            except DeviceError as exc:
                return ("exception", exc.code)

        return self.lt.run(read())

    def reference_read(self, address: int, count: int, unit: int = UNIT) -> Outcome:
        async def read() -> Outcome:
            reply = await self.reference.read_holding_registers(
                address, count=count, device_id=unit
            )
            if reply.isError():
                return ("exception", reply.exception_code)
            return ("ok", list(reply.registers))

        return self.lt.run(read())

    def lean_write(self, address: int, values: list[int]) -> Outcome:
        async def write() -> Outcome:
            try:
                await self.lean.write(address, values, UNIT)
            except DeviceError as exc:
                return ("exception", exc.code)
            return ("ok", None)

        return self.lt.run(write())

    def reference_write(self, address: int, values: list[int]) -> Outcome:
        async def write() -> Outcome:
            reply = await self.reference.write_registers(address, values, device_id=UNIT)
            return ("exception", reply.exception_code) if reply.isError() else ("ok", None)

        return self.lt.run(write())

    def written(self, address: int, values: list[int]) -> None:
        """Record an accepted write in the shadow."""
        for i, value in enumerate(values):
            self.shadow[address + i] = value


@pytest.fixture(scope="module")
def oracle() -> Iterator[Oracle]:
    lt = LoopThread("modbus-oracle")
    initial = [(7919 * i) % 65536 for i in range(BLOCK_SIZE)]

    async def start() -> Oracle:
        server, port = await _start_server([(BLOCK_START, initial)])
        assert wait_for_port("127.0.0.1", port, timeout_s=10)
        lean = LeanModbusClient("127.0.0.1", port, timeout_s=2.0)
        await lean.connect()
        reference = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        assert await reference.connect()
        shadow = {BLOCK_START + i: v for i, v in enumerate(initial)}
        return Oracle(lt, server, port, lean, reference, shadow)

    o = lt.run(start())
    yield o

    async def stop() -> None:
        o.lean.close()
        o.reference.close()
        await o.server.shutdown()

    lt.run(stop())
    lt.close()


_ORACLE_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_ORACLE_SETTINGS
@given(address=ADDRESSES, count=st.integers(1, 125))
def test_lean_reads_what_pymodbus_reads_from_pymodbus_server(
    oracle: Oracle, address: int, count: int
) -> None:
    """Registers inside the block, exception 2 for any range that leaves it: the same."""
    expected = oracle.expected(address, count)
    assert oracle.reference_read(address, count) == expected  # the oracle agrees with itself
    assert oracle.lean_read(address, count) == expected


@_ORACLE_SETTINGS
@given(
    address=ADDRESSES,
    values=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=123),
    lean_writes=st.booleans(),
)
def test_a_write_by_one_client_is_read_back_by_the_other(
    oracle: Oracle, address: int, values: list[int], lean_writes: bool
) -> None:
    """Function 16 by the lean client (or pymodbus), read back by pymodbus (or lean)."""
    inside = oracle.expected(address, len(values))[0] == "ok"
    if lean_writes:
        outcome, read_back = oracle.lean_write(address, values), oracle.reference_read
    else:
        outcome, read_back = oracle.reference_write(address, values), oracle.lean_read
    assert outcome == (("ok", None) if inside else ("exception", 2))
    if inside:
        oracle.written(address, values)
    assert read_back(address, len(values)) == oracle.expected(address, len(values))


def test_illegal_address_is_exception_2_for_both_reads_and_writes(oracle: Oracle) -> None:
    below, straddling = BLOCK_START - 3, BLOCK_START + BLOCK_SIZE - 2
    for address in (below, straddling, 60000):
        assert oracle.reference_read(address, 4) == ("exception", 2)
        assert oracle.lean_read(address, 4) == ("exception", 2)
        assert oracle.reference_write(address, [1, 2, 3, 4]) == ("exception", 2)
        assert oracle.lean_write(address, [1, 2, 3, 4]) == ("exception", 2)


def test_exception_2_is_illegal_address_for_discovery_and_others_a_device_error(
    oracle: Oracle,
) -> None:
    """The lean reader raises what SunSpec discovery needs: ``IllegalAddress`` for code 2;
    a request to a unit the server does not have gets pymodbus' code as ``DeviceError``."""

    async def scenario() -> tuple[BaseException | None, int | None]:
        illegal: BaseException | None = None
        try:
            await oracle.lean.read(BLOCK_START - 1, 1, UNIT)
        except IllegalAddress as exc:
            illegal = exc
        try:
            await oracle.lean.read(BLOCK_START, 1, UNIT + 8)
        except DeviceError as exc:
            return illegal, exc.code
        return illegal, None

    illegal, unit_code = oracle.lt.run(scenario())
    assert isinstance(illegal, IllegalAddress)
    reference = oracle.reference_read(BLOCK_START, 1, unit=UNIT + 8)
    assert reference[0] == "exception"
    assert unit_code == reference[1]


def test_the_writer_adapter_replies_as_pymodbus_does(oracle: Oracle) -> None:
    """``LeanRegisterClient`` (the control writer's client) and pymodbus' client: the same
    ``isError()``, ``exception_code`` and ``registers`` for the same requests."""

    def summary(reply: Any) -> tuple[bool, int | None, list[int]]:
        # exception_code only means something on an error (pymodbus says 0, the adapter None)
        error = reply.isError()
        code = reply.exception_code if error else None
        return error, code, list(getattr(reply, "registers", [])) if not error else []

    async def scenario() -> list[tuple[Any, Any]]:
        adapter = LeanRegisterClient("127.0.0.1", oracle.port, timeout_s=2.0)
        assert await adapter.connect()
        pairs = []
        try:
            for address, count in ((BLOCK_START, 10), (BLOCK_START - 1, 2), (50000, 1)):
                mine = await adapter.read_holding_registers(address, count=count, device_id=UNIT)
                theirs = await oracle.reference.read_holding_registers(
                    address, count=count, device_id=UNIT
                )
                pairs.append((summary(mine), summary(theirs)))
            for address in (BLOCK_START + 5, BLOCK_START + BLOCK_SIZE):
                values = [address % 65536, 1]
                mine = await adapter.write_registers(address, values, device_id=UNIT)
                theirs = await oracle.reference.write_registers(address, values, device_id=UNIT)
                pairs.append((summary(mine), summary(theirs)))
        finally:
            adapter.close()
        return pairs

    before = oracle.expected(BLOCK_START, 10)[1]
    pairs = oracle.lt.run(scenario())
    oracle.written(BLOCK_START + 5, [(BLOCK_START + 5) % 65536, 1])
    for mine, theirs in pairs:
        assert mine == theirs
    assert pairs[0][0][2] == before
    assert pairs[1][0][:2] == (True, 2)
    assert [mine[:2] for mine, _ in pairs[3:]] == [(False, None), (True, 2)]


# --------------------------------------------------------------------------- SunSpec


def test_discovery_and_a_poll_agree_over_an_inverter_image_served_by_pymodbus() -> None:
    """A simulated inverter's SunSpec image in pymodbus' datastore: discovery and a full
    poll through the lean client (the hot path: ``request`` and ``decode_data``) give the
    same plan and reading as through pymodbus' client (``decode_reading``)."""
    model = InverterModel(ratings=InverterRatings(), soc_pct=55.0, power_w=-3_200.0)
    device = SimulatedInverter(model, serial="ORACLE01")
    words = len(device.image) // 2
    image = list(struct.unpack(f">{words}H", device.image))
    lt = LoopThread("modbus-oracle-sunspec")

    async def scenario() -> tuple[Any, Any, Any, Any]:
        server, port = await _start_server([(BASE_ADDRESS, image)])
        assert wait_for_port("127.0.0.1", port, timeout_s=10)
        lean = LeanModbusClient("127.0.0.1", port, timeout_s=2.0)
        reference = PymodbusConnection("127.0.0.1", port, timeout_s=2.0)
        try:
            await lean.connect()
            await reference.connect()
            lean_plan = await discover_plan(lean.reader(UNIT))
            reference_plan = await discover_plan(reference.reader(UNIT))
            read = reference.reader(UNIT)
            blocks = [await read(a, c) for a, c in reference_plan.reads]
            data: list[bytes] = []
            for address, count in lean_plan.reads:
                future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

                def settle(reply: Reply, future: Any = future) -> None:
                    if isinstance(reply, Exception):
                        future.set_exception(reply)
                    else:
                        future.set_result(bytes(reply))

                lean.request(address, count, UNIT, settle)
                data.append(await future)
            return (
                lean_plan,
                reference_plan,
                decode_data(lean_plan, data),
                decode_reading(reference_plan, blocks),
            )
        finally:
            lean.close()
            reference.close()
            await server.shutdown()

    try:
        lean_plan, reference_plan, lean_reading, reference_reading = lt.run(scenario())
    finally:
        lt.close()
    assert lean_plan.model_map.model_ids == reference_plan.model_map.model_ids
    assert lean_plan.capabilities == reference_plan.capabilities
    assert lean_plan.reads == reference_plan.reads
    assert lean_plan.capabilities.serial == "ORACLE01"
    assert lean_reading == reference_reading
    assert lean_reading.power_w == pytest.approx(-3_200.0, abs=50)
