"""SunSpec device writes: the active-power setpoint of model 704 (DER AC controls).

``write_setpoint`` writes ``WSet``, ``read_setpoint`` reads it back, and
``write_reversion_timer`` sets ``WSetRvrtTms``, the device's own fail-safe: when no
setpoint write restarts the timer for that long, the device goes back to ``WSetRvrt``
(DESIGN.md invariant 3). :class:`SunSpecDevice` puts the three behind the control writer's
``SetpointDevice``.
"""

from __future__ import annotations

from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus.connection import register_reader
from collectors.modbus.fast import DeviceError
from gridflex.sunspec.codec import decode, unscale
from gridflex.sunspec.discovery import ModelInstance, ModelMap
from gridflex.sunspec.sign import power_w_from_sunspec, sunspec_w_from_power_w
from gridflex.sunspec.tables import load_model

_ENABLED = 1
_WATTS_MODE = 1


def _model_704(model_map: ModelMap) -> ModelInstance:
    instance = model_map.find(704)
    if instance is None:
        raise DeviceError("device has no SunSpec model 704 (DER AC controls)")
    return instance


__all__ = ["SunSpecDevice", "read_setpoint", "write_reversion_timer", "write_setpoint"]


async def write_setpoint(
    client: AsyncModbusTcpClient, model_map: ModelMap, power_w: float, unit_id: int = 1
) -> float:
    """Write an absolute active-power setpoint (gridflex sign) to 704; idempotent.

    One function-16 write sets ``WSetEna`` = enabled, ``WSetMod`` = watts and ``WSet``
    (converted to SunSpec's + injection and scaled by ``WSet_SF``), so a repeated call
    changes nothing. Returns the value written in watts after scaling (gridflex sign).
    Raises ``DeviceError`` when the device lacks 704 or refuses the write.
    """
    instance = _model_704(model_map)
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


async def read_setpoint(
    client: AsyncModbusTcpClient, model_map: ModelMap, unit_id: int = 1
) -> float | None:
    """The active-power setpoint in force on the device, W, gridflex sign (+ charge).

    Reads 704 ``WSetEna``/``WSetMod``/``WSet`` and scales by ``WSet_SF``. Returns None when
    no watt setpoint is in force (``WSetEna`` disabled, another ``WSetMod``, or ``WSet``
    not implemented). Raises ``DeviceError`` when the device lacks 704 or refuses the read.
    """
    instance = _model_704(model_map)
    table = load_model(704)
    read = register_reader(client, unit_id)
    ena, wset = table.point("WSetEna"), table.point("WSet")
    regs = await read(instance.point_address(ena.offset), wset.offset + wset.size - ena.offset)
    sf_raw = decode("sunssf", await read(instance.point_address(table.point("WSet_SF").offset), 1))
    sf = sf_raw if isinstance(sf_raw, int) else 0
    mod_offset = table.point("WSetMod").offset - ena.offset
    raw = decode("int32", regs, wset.offset - ena.offset)
    if regs[0] != _ENABLED or regs[mod_offset] != _WATTS_MODE or not isinstance(raw, int):
        return None
    return power_w_from_sunspec(raw * 10.0**sf)


async def write_reversion_timer(
    client: AsyncModbusTcpClient, model_map: ModelMap, revert_s: int, unit_id: int = 1
) -> None:
    """Set 704 ``WSetRvrtTms``: revert to ``WSetRvrt`` after ``revert_s`` s without a write.

    ``revert_s`` = 0 switches the reversion off (SunSpec). Raises ``DeviceError`` when the
    device lacks 704 or refuses the write.
    """
    if not 0 <= revert_s <= 0xFFFFFFFF:
        raise ValueError(f"revert_s: expected 0..4294967295 s, got {revert_s!r}")
    instance = _model_704(model_map)
    address = instance.point_address(load_model(704).point("WSetRvrtTms").offset)
    reply = await client.write_registers(
        address, [(revert_s >> 16) & 0xFFFF, revert_s & 0xFFFF], device_id=unit_id
    )
    if reply.isError():
        raise DeviceError(f"reversion write refused: Modbus exception {reply.exception_code}")


class SunSpecDevice:
    """A SunSpec inverter as the control writer's ``SetpointDevice`` (704 ``WSet``).

    Every :meth:`write` sets the reversion timer to ``revert_s`` seconds first and then the
    setpoint, so the setpoint is never in force without its fail-safe: should the writer
    go silent, the device reverts by itself ``revert_s`` after the last write (a device
    restarted since the last command gets its timer back with the next one). The keep-alive
    commands of the pipeline (``dispatch.refresh_s``) must come more often than
    ``revert_s``.
    """

    def __init__(
        self, client: AsyncModbusTcpClient, model_map: ModelMap, unit_id: int, revert_s: int
    ) -> None:
        if revert_s < 1:
            raise ValueError(f"revert_s: expected >= 1 s (the fail-safe), got {revert_s!r}")
        self.client = client
        self.model_map = model_map
        self.unit_id = unit_id
        self.revert_s = revert_s

    async def write(self, setpoint_w: float) -> None:
        """Set the reversion timer, then write the setpoint (gridflex sign), W."""
        await write_reversion_timer(self.client, self.model_map, self.revert_s, self.unit_id)
        await write_setpoint(self.client, self.model_map, setpoint_w, self.unit_id)

    async def read_back(self) -> float:
        """The setpoint in force, W; ``DeviceError`` when no watt setpoint is in force."""
        value_w = await read_setpoint(self.client, self.model_map, self.unit_id)
        if value_w is None:
            raise DeviceError("no active-power setpoint in force (704 WSetEna/WSetMod)")
        return value_w
