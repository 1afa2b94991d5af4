"""SunSpec device writes over real Modbus TCP sockets (a simulated inverter)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus.connection import discover_plan, register_reader
from control.sunspec import write_setpoint
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
