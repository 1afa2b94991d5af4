"""SunSpec device writes: the active-power setpoint of model 704 (DER AC controls)."""

from __future__ import annotations

from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus.connection import register_reader
from collectors.modbus.fast import DeviceError
from gridflex.sunspec.codec import decode, unscale
from gridflex.sunspec.discovery import ModelMap
from gridflex.sunspec.sign import power_w_from_sunspec, sunspec_w_from_power_w
from gridflex.sunspec.tables import load_model

__all__ = ["write_setpoint"]


async def write_setpoint(
    client: AsyncModbusTcpClient, model_map: ModelMap, power_w: float, unit_id: int = 1
) -> float:
    """Write an absolute active-power setpoint (gridflex sign) to 704; idempotent.

    One function-16 write sets ``WSetEna`` = enabled, ``WSetMod`` = watts and ``WSet``
    (converted to SunSpec's + injection and scaled by ``WSet_SF``), so a repeated call
    changes nothing. Returns the value written in watts after scaling (gridflex sign).
    Raises ``DeviceError`` when the device lacks 704 or refuses the write.
    """
    instance = model_map.find(704)
    if instance is None:
        raise DeviceError("device has no SunSpec model 704 (DER AC controls)")
    table = load_model(704)
    read = register_reader(client, unit_id)
    sf_raw = decode("sunssf", await read(instance.point_address(table.point("WSet_SF").offset), 1))
    sf = sf_raw if isinstance(sf_raw, int) else 0
    raw = unscale(sunspec_w_from_power_w(power_w), sf)
    ena = instance.point_address(table.point("WSetEna").offset)
    assert table.point("WSet").offset == table.point("WSetEna").offset + 2
    reply = await client.write_registers(
        ena, [1, 1, (raw >> 16) & 0xFFFF, raw & 0xFFFF], device_id=unit_id
    )
    if reply.isError():
        raise DeviceError(f"setpoint write refused: Modbus exception {reply.exception_code}")
    return power_w_from_sunspec(raw * 10.0**sf)
