"""SunSpec device writes over real Modbus TCP sockets (a simulated inverter)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from pymodbus.client import AsyncModbusTcpClient

from bench.baselines import open_pymodbus_client
from collectors.modbus.connection import discover_plan, register_reader
from control.modbus_client import OpenRegisterClient, open_client
from control.sunspec import SunSpecDevice, write_setpoint
from gridflex.net import free_port_block
from simulators.inverter import InverterFleet
from tests.loop_helpers import LoopThread

pytestmark = pytest.mark.integration


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def test_write_setpoint_is_absolute_and_idempotent(loop_thread: LoopThread) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=7)

    async def scenario() -> list[float]:
        async with fleet:
            client = AsyncModbusTcpClient("127.0.0.1", port=base, timeout=2)
            await client.connect()
            plan = await discover_plan(register_reader(client, 1))
            written = [await write_setpoint(client, plan.model_map, -2_500.0) for _ in range(2)]
            client.close()
            return written

    assert loop_thread.run(scenario()) == [-2_500.0, -2_500.0]
    model = fleet.devices[0].model
    assert model.setpoint_enabled and model.setpoint_w == -2_500.0
    assert fleet.devices[0].decode_point(704, "WSet") == 2_500  # SunSpec: + injection


@pytest.mark.parametrize(
    "opener", [open_client, open_pymodbus_client], ids=["lean", "pymodbus-oracle"]
)
def test_the_device_reverts_to_its_default_on_its_own(
    loop_thread: LoopThread, opener: OpenRegisterClient
) -> None:
    """The writer's client and pymodbus' (the reference): setpoint, read-back, then silence
    -> the device's WSetRvrt default."""
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=21)
    sim = fleet.devices[0]

    async def scenario() -> tuple[float, float]:
        async with fleet:
            client = await opener("127.0.0.1", base, timeout_s=2.0)
            try:
                plan = await discover_plan(register_reader(client, 1))
                device = SunSpecDevice(client, plan.model_map, 1, revert_s=1, default_w=1_500.0)
                await device.write(-4_000.0)
                readback = await device.read_back()
                assert sim.decode_point(704, "WSetEnaRvrt") == 1
                deadline = time.monotonic() + 5
                while sim.model.setpoint_w != 1_500.0:
                    assert time.monotonic() < deadline, "the device did not revert"
                    await asyncio.sleep(0.05)
                return readback, sim.model.setpoint_w
            finally:
                client.close()

    assert loop_thread.run(scenario()) == (-4_000.0, 1_500.0)


def test_a_lost_reversion_is_set_again_at_read_back(loop_thread: LoopThread) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=22)
    sim = fleet.devices[0]

    async def scenario() -> int:
        async with fleet:
            client = await open_client("127.0.0.1", base, timeout_s=2.0)
            try:
                plan = await discover_plan(register_reader(client, 1))
                device = SunSpecDevice(client, plan.model_map, 1, revert_s=10)
                await device.write(1_000.0)
                sim.reboot()  # controls back to factory, the connection stays (worst case)
                await device.write(2_000.0)
                assert await device.read_back() == 2_000.0
                value = sim.decode_point(704, "WSetRvrtTms")
                assert isinstance(value, int)
                return value
            finally:
                client.close()

    assert loop_thread.run(scenario()) == 10


def test_the_lean_client_takes_concurrent_requests_in_turn(loop_thread: LoopThread) -> None:
    """The command worker and the droop supervisor share one connection."""
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=24)

    async def scenario() -> list[float]:
        async with fleet:
            client = await open_client("127.0.0.1", base, timeout_s=2.0)
            try:
                plan = await discover_plan(register_reader(client, 1))
                device = SunSpecDevice(client, plan.model_map, 1, revert_s=10)
                await device.write(500.0)
                results = await asyncio.gather(
                    *(device.read_back() for _ in range(5)), device.read_droop()
                )
                return [r for r in results if isinstance(r, float)]
            finally:
                client.close()

    assert loop_thread.run(scenario()) == [500.0] * 5
