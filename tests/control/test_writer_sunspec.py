"""The setpoint writer over real Modbus TCP: a simulated SunSpec inverter on loopback."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus.connection import discover_plan, register_reader
from control.clamp import UNLIMITED_SITE, Limits
from control.devices import LazySunSpecDevice
from control.ledger import Ledger
from control.sunspec import SunSpecDevice, read_setpoint
from control.writer import SetpointDevice, apply_command
from gridflex.config import InverterAsset
from gridflex.contract import DispatchAck, DispatchCommand
from gridflex.net import free_port_block
from simulators.inverter import InverterFleet
from simulators.inverter.registers import SimulatedInverter
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


class RequestCounter:
    """Counts the Modbus requests a simulated device answers, by function code."""

    def __init__(self, sim: SimulatedInverter) -> None:
        self.by_function: Counter[int] = Counter()
        handle = sim.handle_pdu

        def counted(unit_id: int, pdu: bytes) -> bytes:
            self.by_function[pdu[0]] += 1
            return handle(unit_id, pdu)

        sim.handle_pdu = counted  # type: ignore[method-assign]


@pytest.mark.parametrize("read_write", [True, False], ids=["function 23", "no function 23"])
def test_a_command_is_one_round_trip_or_a_write_and_a_read_on_a_device_without_23(
    loop_thread: LoopThread, tmp_path: Path, read_write: bool
) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=5, read_write=read_write)
    sim = fleet.devices[0]
    asset = InverterAsset(
        id="inv1", kind="inverter", host="127.0.0.1", port=base, max_charge_w=10_000.0
    )
    device = LazySunSpecDevice(asset, revert_s=10, timeout_s=2.0)

    async def scenario(ledger: Ledger) -> tuple[list[DispatchAck], list[Counter[int]]]:
        async with fleet:
            await device.connect()  # discovery, WSet_SF and the reversion are not counted
            await device.write_read_back(0.0)  # a device without 23 refuses it here, once
            acks, counts = [], []
            for i, setpoint_w in enumerate((-4_000.0, 2_500.0)):
                counter = RequestCounter(sim)
                acks.append(await _apply(_command(f"c{i}", setpoint_w), ledger, device))
                counts.append(counter.by_function)
                del sim.handle_pdu
            device.drop()
            return acks, counts

    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        acks, counts = loop_thread.run(scenario(ledger))

    assert [(a.result, a.applied_w, a.readback_w) for a in acks] == [
        ("applied", -4_000.0, -4_000.0),
        ("applied", 2_500.0, 2_500.0),
    ]
    assert sim.model.setpoint_w == 2_500.0
    if read_write:
        assert counts == [Counter({23: 1}), Counter({23: 1})]
    else:  # 16 and 3, never 23 again after the first refusal
        assert counts == [Counter({16: 1, 3: 1}), Counter({16: 1, 3: 1})]
        assert device.read_write is False


@pytest.mark.parametrize("read_write", [True, False], ids=["function 23", "no function 23"])
def test_write_read_back_over_pymodbus_the_baseline_client(
    loop_thread: LoopThread, read_write: bool
) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=6, read_write=read_write)

    async def scenario() -> tuple[float, bool]:
        async with fleet:
            client = AsyncModbusTcpClient("127.0.0.1", port=base, timeout=2)
            await client.connect()
            try:
                plan = await discover_plan(register_reader(client, 1))
                device = SunSpecDevice(client, plan.model_map, 1, revert_s=10)
                return await device.write_read_back(-3_000.0), device.read_write
            finally:
                client.close()

    readback_w, still_23 = loop_thread.run(scenario())
    assert readback_w == -3_000.0
    assert fleet.devices[0].model.setpoint_w == -3_000.0
    assert still_23 is read_write  # pymodbus hands back exception 1 as the lean client does
