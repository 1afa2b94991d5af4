"""Local droop over real Modbus TCP: programming, the device on its own, the supervisor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus.connection import discover_plan, register_reader
from control.devices import LazySunSpecDevice
from control.droop import LocalDroopSupervisor
from control.sunspec import SunSpecDevice
from gridflex.config import parse_site
from gridflex.net import free_port_block
from pipelines.dispatch import DroopParams
from simulators.inverter import InverterFleet, InverterRatings, SimulatedInverter

pytestmark = pytest.mark.integration

RATINGS = InverterRatings(max_charge_w=10_000, max_discharge_w=10_000)
#: IEEE 1547 dead bands and droops with a quick 1 s response (the test waits less).
QUICK = DroopParams(response_time_s=1.0)


@dataclass
class HeldFrequency:
    """The grid frequency the simulated devices measure, held until a test steps it."""

    hz: float = 50.0

    def freq_hz(self, t_s: float) -> float:
        """The held value, whatever the time."""
        return self.hz


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll ``condition`` every 50 ms; fail naming ``what`` after a generous timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        await asyncio.sleep(0.05)


async def _measured_w(client: AsyncModbusTcpClient, sim: SimulatedInverter) -> float:
    """701 ``W`` as a collector reads it, in gridflex's sign (+ charge)."""
    (raw,) = await register_reader(client, 1)(sim.address_of(701, "W"), 1)
    signed = raw - 0x10000 if raw & 0x8000 else raw
    return -float(signed * 10 ** sim.sf["W_SF"])  # SunSpec W is + for injection


def test_program_droop_over_modbus_tcp_reads_back_the_curve() -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, ratings=RATINGS, seed=3)
    wanted = DroopParams(db_of_hz=0.05, db_uf_hz=0.02, k_of=0.03, k_uf=0.02, response_time_s=0.5)

    async def scenario() -> tuple[DroopParams | None, bool]:
        async with fleet:
            client = AsyncModbusTcpClient("127.0.0.1", port=base, timeout=2)
            await client.connect()
            try:
                plan = await discover_plan(register_reader(client, 1))
                device = SunSpecDevice(client, plan.model_map, 1, revert_s=10)
                readback = await device.program_droop(wanted)
                again = await device.read_droop()
                return readback.params, again.enabled and again.differences(wanted) == []
            finally:
                client.close()

    params, confirmed = asyncio.run(scenario())
    assert params == pytest.approx(wanted)
    assert confirmed
    model = fleet.devices[0].model
    assert model.droop_enabled and model.droop == pytest.approx(wanted)


def test_local_droop_follows_a_frequency_step_without_gridflex_in_the_loop() -> None:
    base = free_port_block(1)
    grid = HeldFrequency()
    fleet = InverterFleet(1, base, ratings=RATINGS, frequency=grid, seed=5)
    sim = fleet.devices[0]

    async def scenario() -> dict[str, float]:
        seen: dict[str, float] = {}
        async with fleet:
            writer = AsyncModbusTcpClient("127.0.0.1", port=base, timeout=2)
            await writer.connect()
            plan = await discover_plan(register_reader(writer, 1))
            await SunSpecDevice(writer, plan.model_map, 1, revert_s=10).program_droop(QUICK)
            writer.close()  # gridflex leaves the loop: nothing writes from here on
            reader = AsyncModbusTcpClient("127.0.0.1", port=base, timeout=2)
            await reader.connect()
            try:
                seen["nominal"] = await _measured_w(reader, sim)
                # 49.80 Hz: (49.80 - 49.964) / (0.05 x 50) x 10 kW = -656 W (discharge)
                grid.hz = 49.80
                await _until(lambda: abs(sim.model.power_w + 656.0) < 13.0, "-656 W at 49.80 Hz")
                seen["under"] = await _measured_w(reader, sim)
                # 50.20 Hz: the mirror image, +656 W (charge)
                grid.hz = 50.20
                await _until(lambda: abs(sim.model.power_w - 656.0) < 13.0, "+656 W at 50.20 Hz")
                seen["over"] = await _measured_w(reader, sim)
            finally:
                reader.close()
        return seen

    seen = asyncio.run(scenario())
    assert seen["nominal"] == 0.0  # inside the dead band
    assert seen["under"] == pytest.approx(-656.0, abs=13.0)  # within 2 %
    assert seen["over"] == pytest.approx(656.0, abs=13.0)
    assert not sim.model.setpoint_enabled  # no 704 setpoint: the response is the device's own


def test_supervisor_reprograms_after_reboot_and_drift_and_a_device_down_blocks_no_other() -> None:
    base = free_port_block(2)
    fleet = InverterFleet(2, base, ratings=RATINGS, seed=9)
    site = parse_site(
        {
            "site": {"id": "s1"},
            "dispatch": {"mode": "droop", "local_droop": True, "droop": {"k_uf": 0.03}},
            "assets": [
                {
                    "id": f"inv-{i}",
                    "kind": "inverter",
                    "host": "127.0.0.1",
                    "port": base + i,
                    "max_charge_w": 10_000,
                    "max_discharge_w": 10_000,
                    "droop": {"response_time_s": 2.0} if i == 1 else None,
                }
                for i in range(2)
            ],
        }
    )
    devices = {
        a.id: LazySunSpecDevice(a, revert_s=10, timeout_s=site.modbus.timeout_s)
        for a in site.inverters
    }
    supervisor = LocalDroopSupervisor.for_site(
        site.dispatch, {a.id: a for a in site.assets}, devices, verify_s=0.2, retry_s=0.1
    )
    states = supervisor.states
    sims = fleet.devices
    wanted = [DroopParams(k_uf=0.03), DroopParams(k_uf=0.03, response_time_s=2.0)]

    def has_curve(i: int) -> bool:
        m = sims[i].model
        return m.droop_enabled and m.droop == pytest.approx(wanted[i])

    async def scenario() -> dict[str, object]:
        seen: dict[str, object] = {}
        async with fleet:
            await supervisor.start()
            try:
                await _until(lambda: has_curve(0) and has_curve(1), "both programmed")
                assert {s.status for s in states.values()} == {"programmed"}
                # a power cycle puts device 0 back to factory: programmed again
                await fleet.reboot_device(0)
                await _until(lambda: states["inv-0"].programs >= 2 and has_curve(0), "reboot")
                # an operator switches device 1's droop off: drift, programmed again
                sims[1].write_registers(sims[1].address_of(711, "Ena"), [0])
                await _until(lambda: states["inv-1"].programs >= 2 and has_curve(1), "drift")
                seen["drift_reason"] = states["inv-1"].reason
                # device 1 off the network: failed, while device 0 is still checked
                await fleet.stop_device(1)
                await _until(lambda: states["inv-1"].status == "failed", "device 1 failed")
                checked = states["inv-0"].checked_ms or 0
                await _until(lambda: (states["inv-0"].checked_ms or 0) > checked, "0 checked")
                seen["inv-0 while 1 down"] = states["inv-0"].status
                # device 1 back, rebooted meanwhile: programmed afresh
                sims[1].reboot()
                await fleet.start_device(1)
                await _until(lambda: states["inv-1"].status == "programmed", "1 back")
                await _until(lambda: has_curve(1), "device 1 has its curve again")
                seen["back_reason"] = states["inv-1"].reason
            finally:
                await supervisor.stop()
                for device in devices.values():
                    device.drop()
        return seen

    seen = asyncio.run(scenario())
    assert str(seen["drift_reason"]).startswith("drift: droop not enabled")
    assert seen["inv-0 while 1 down"] == "programmed"
    assert str(seen["back_reason"]).startswith("reached again after:")
    snapshot = supervisor.snapshot()
    assert snapshot["inv-1"]["params"]["response_time_s"] == 2.0
    assert snapshot["inv-0"]["readback"]["enabled"] is True
