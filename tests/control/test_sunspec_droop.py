"""Model 711 writes and read-back against the simulated inverter's register image."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, cast

import pytest
from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus.connection import discover_plan, register_reader
from collectors.modbus.fast import DeviceError
from control.sunspec import SunSpecDevice, read_droop, write_droop
from gridflex.sunspec.discovery import ModelMap
from pipelines.dispatch import DroopParams
from simulators.inverter import InverterModel, InverterRatings, SimulatedInverter
from tests.control.image_client import ImageClient

RATINGS = InverterRatings(max_charge_w=10_000, max_discharge_w=10_000)
#: A faster characteristic than IEEE 1547's defaults, in every field.
FAST = DroopParams(db_of_hz=0.1, db_uf_hz=0.2, k_of=0.04, k_uf=0.06, response_time_s=2.5)


def _sync(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test body on a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


def _device(controls: int = 1) -> SimulatedInverter:
    return SimulatedInverter(InverterModel(ratings=RATINGS), serial="T1", droop_controls=controls)


async def _connect(sim: SimulatedInverter) -> tuple[ImageClient, ModelMap, Any]:
    client = ImageClient(sim)
    modbus = cast(AsyncModbusTcpClient, client)
    plan = await discover_plan(register_reader(modbus, 1))
    return client, plan.model_map, modbus


def _curve(sim: SimulatedInverter, index: int) -> dict[str, object]:
    names = ("DbOf", "DbUf", "KOf", "KUf", "RspTms")
    return {n: sim.decode_point(711, f"Ctl[{index}].{n}") for n in names}


@_sync
async def test_write_droop_programs_the_curve_at_the_devices_scale_factors_and_enables_it() -> None:
    sim = _device()
    _, model_map, modbus = await _connect(sim)
    assert await write_droop(modbus, model_map, 1, FAST) == 1
    # Db_SF -3, K_SF -3, RspTms_SF -1
    assert _curve(sim, 0) == {"DbOf": 100, "DbUf": 200, "KOf": 40, "KUf": 60, "RspTms": 25}
    assert sim.decode_point(711, "Ena") == 1
    assert sim.model.droop_enabled
    assert sim.model.droop == pytest.approx(FAST)


@_sync
async def test_read_droop_reports_the_curve_in_force_and_the_devices_resolution() -> None:
    sim = _device()
    _, model_map, modbus = await _connect(sim)
    before = await read_droop(modbus, model_map, 1)
    assert not before.enabled
    assert before.params == pytest.approx(DroopParams())
    await write_droop(modbus, model_map, 1, FAST)
    after = await read_droop(modbus, model_map, 1)
    assert after.enabled
    assert after.params == pytest.approx(FAST)
    assert (after.db_step_hz, after.k_step, after.response_step_s) == pytest.approx(
        (0.001, 0.001, 0.1)
    )
    assert after.differences(FAST) == []


@_sync
async def test_a_device_with_a_read_only_factory_set_gets_the_curve_in_the_next_and_adopts_it() -> (
    None
):
    sim = _device(controls=2)
    client, model_map, modbus = await _connect(sim)
    assert await write_droop(modbus, model_map, 1, FAST) == 2
    assert _curve(sim, 0) == {"DbOf": 36, "DbUf": 36, "KOf": 50, "KUf": 50, "RspTms": 50}
    assert _curve(sim, 1) == {"DbOf": 100, "DbUf": 200, "KOf": 40, "KUf": 60, "RspTms": 25}
    assert sim.decode_point(711, "AdptCtlReq") == 2
    assert sim.decode_point(711, "AdptCtlRslt") == 1  # COMPLETED
    assert sim.model.droop == pytest.approx(FAST) and sim.model.droop_enabled
    # the order the model asks for: the curve, its adoption, then Ena
    order = [address for address, _ in client.writes]
    assert order == [sim.address_of(711, p) for p in ("Ctl[1].DbOf", "AdptCtlReq", "Ena")]
    readback = await read_droop(modbus, model_map, 1)
    assert readback.params == pytest.approx(FAST)


@_sync
async def test_a_refused_adoption_raises_and_leaves_the_droop_off() -> None:
    sim = _device(controls=2)
    client, model_map, modbus = await _connect(sim)
    curve_at = sim.address_of(711, "Ctl[1].DbOf")

    def corrupt(address: int, _values: list[int]) -> None:
        if address == curve_at:  # the device stores a droop of 0: unusable
            assert sim.write_registers(sim.address_of(711, "Ctl[1].KOf"), [0]) is None

    client.on_write = corrupt
    with pytest.raises(DeviceError, match="AdptCtlRslt FAILED"):
        await write_droop(modbus, model_map, 1, FAST)
    assert sim.decode_point(711, "Ena") == 0
    assert sim.model.droop == DroopParams()


@_sync
async def test_program_droop_accepts_rounding_within_half_a_scale_step() -> None:
    sim = _device()
    _, model_map, modbus = await _connect(sim)
    device = SunSpecDevice(modbus, model_map, 1, revert_s=10)
    wanted = DroopParams(response_time_s=2.54)  # RspTms_SF -1: stored as 2.5 s
    readback = await device.program_droop(wanted)
    assert readback.params is not None
    assert readback.params.response_time_s == pytest.approx(2.5)


@_sync
async def test_program_droop_raises_when_the_device_does_not_keep_the_curve() -> None:
    sim = _device()
    client, model_map, modbus = await _connect(sim)
    ena_at = sim.address_of(711, "Ena")

    def forget(address: int, _values: list[int]) -> None:
        if address == ena_at:  # acknowledged, then dropped (a device that lies)
            assert sim.write_registers(ena_at, [0]) is None

    client.on_write = forget
    device = SunSpecDevice(modbus, model_map, 1, revert_s=10)
    with pytest.raises(DeviceError, match="droop not enabled"):
        await device.program_droop(FAST)


@_sync
async def test_a_droop_that_rounds_to_zero_at_the_devices_scale_is_refused_before_writing() -> None:
    sim = _device()
    client, model_map, modbus = await _connect(sim)
    with pytest.raises(ValueError, match="KOf"):
        await write_droop(modbus, model_map, 1, DroopParams(k_of=0.0004))
    assert client.writes == []


@_sync
async def test_a_device_without_711_is_a_device_error() -> None:
    sim = _device()
    _, model_map, modbus = await _connect(sim)
    without = ModelMap(model_map.base, tuple(m for m in model_map.models if m.model_id != 711))
    with pytest.raises(DeviceError, match="no SunSpec model 711"):
        await read_droop(modbus, without, 1)
    with pytest.raises(DeviceError, match="no SunSpec model 711"):
        await write_droop(modbus, without, 1, FAST)
