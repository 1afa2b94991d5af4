"""The setpoint writer over real Modbus TCP: a simulated SunSpec inverter on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus.connection import discover_plan, register_reader
from control.clamp import UNLIMITED_SITE, Limits
from control.ledger import Ledger
from control.sunspec import SunSpecDevice, read_setpoint
from control.writer import SetpointDevice, apply_command
from gridflex.contract import DispatchAck, DispatchCommand
from gridflex.net import free_port_block
from simulators.inverter import InverterFleet
from tests.loop_helpers import LoopThread

pytestmark = pytest.mark.integration

LIMITS = Limits(max_charge_w=10_000.0, max_discharge_w=10_000.0, soc_min_pct=0, soc_max_pct=100)


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


class CountingDevice:
    """Counts the writes that reach the real device."""

    def __init__(self, inner: SetpointDevice) -> None:
        self.inner = inner
        self.writes = 0

    async def write(self, setpoint_w: float) -> None:
        self.writes += 1
        await self.inner.write(setpoint_w)

    async def read_back(self) -> float:
        return await self.inner.read_back()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _command(command_id: str, setpoint_w: float) -> DispatchCommand:
    now = _now_ms()
    return DispatchCommand(
        site="site1",
        asset="inv1",
        ts_ms=now - 200,
        seq=1,
        command_id=command_id,
        issued_ms=now,
        setpoint_w=setpoint_w,
        valid_until_ms=now + 10_000,
        mode="droop",
        reason="test",
    )


async def _apply(cmd: DispatchCommand, ledger: Ledger, device: SetpointDevice) -> DispatchAck:
    return await apply_command(
        cmd,
        ledger=ledger,
        device=device,
        limits=LIMITS,
        site_headroom=UNLIMITED_SITE,
        soc_pct=50.0,
        faulted=None,
        now_ms=_now_ms,
        previous=None,
    )


def test_apply_then_duplicate_then_the_device_reverts(
    loop_thread: LoopThread, tmp_path: Path
) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=11)
    sim = fleet.devices[0]

    async def scenario(ledger: Ledger) -> tuple[DispatchAck, DispatchAck, int, float, float]:
        async with fleet:
            client = AsyncModbusTcpClient("127.0.0.1", port=base, timeout=2)
            await client.connect()
            try:
                plan = await discover_plan(register_reader(client, 1))
                device = CountingDevice(SunSpecDevice(client, plan.model_map, 1, revert_s=1))
                first = await _apply(_command("c1", -4_000.0), ledger, device)
                # the simulator holds it: SunSpec WSet is + for injection
                assert sim.decode_point(704, "WSet") == 4_000
                assert sim.decode_point(704, "WSetRvrtTms") == 1
                again = await _apply(_command("c1", -4_000.0), ledger, device)
                written_at = time.monotonic()
                # silence: the device's own timer brings it back to WSetRvrt (0 W)
                while sim.model.setpoint_w != sim.model.revert_setpoint_w:
                    assert time.monotonic() - written_at < 3.0, "the device did not revert"
                    await asyncio.sleep(0.05)
                reverted_after_s = time.monotonic() - written_at
                await asyncio.sleep(0.2)  # the next image refresh
                after_w = await read_setpoint(client, plan.model_map, 1)
                assert after_w is not None
                return first, again, device.writes, reverted_after_s, after_w
            finally:
                client.close()

    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        first, again, writes, reverted_after_s, after_w = loop_thread.run(scenario(ledger))

    assert (first.result, first.applied_w, first.readback_w) == ("applied", -4_000.0, -4_000.0)
    assert first.latency_from_telemetry_ms is not None and first.latency_from_telemetry_ms >= 200
    assert (again.result, again.applied_w) == ("duplicate", -4_000.0)
    assert writes == 1
    # reverted about revert_s = 1 s after the write, not before (the sim ticks at 10 Hz)
    assert 0.7 <= reverted_after_s <= 2.0
    assert sim.model.setpoint_w == 0.0 and after_w == 0.0
