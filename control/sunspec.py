"""SunSpec device writes: the active-power setpoint of model 704 and the droop of model 711.

``write_setpoint`` writes ``WSet``, ``read_setpoint`` reads it back, and
``write_reversion_timer`` sets ``WSetRvrtTms``, the device's own fail-safe: when no
setpoint write restarts the timer for that long, the device goes back to ``WSetRvrt``
(DESIGN.md invariant 3).

``write_droop`` programs a frequency-droop curve into model 711 (DER frequency droop,
IEEE 1547-2018 clause 6.5.2.7) and ``read_droop`` reads the one in force. 711 keeps
``NCtl`` stored control sets ``Ctl[i]`` (``DbOf``, ``DbUf``, ``KOf``, ``KUf``,
``RspTms``, scaled by the model's ``Db_SF``/``K_SF``/``RspTms_SF``); a set marked
``ReadOnly`` = R (a factory set) cannot be written. Per the SunSpec DER information model a
client writes a writable set and adopts it by writing its 1-based index to ``AdptCtlReq``
(0 = no active control); the device reports ``AdptCtlRslt`` IN_PROGRESS, then COMPLETED or
FAILED. ``Ena`` = 1 then switches the droop on.

:class:`SunSpecDevice` puts both behind the control writer's ``SetpointDevice`` and
``control.droop.DroopProgrammable``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from collectors.modbus.connection import RegisterClient, register_reader
from collectors.modbus.fast import DeviceError
from control.droop import DroopReadback
from control.writer import ReadBackError
from gridflex.sunspec.codec import Value, apply_sf, decode, unscale
from gridflex.sunspec.discovery import ModelInstance, ModelMap
from gridflex.sunspec.sign import power_w_from_sunspec, sunspec_w_from_power_w
from gridflex.sunspec.tables import ModelTable, load_model
from pipelines.dispatch import DroopParams

log = logging.getLogger(__name__)

_ENABLED = 1
_WATTS_MODE = 1
_ILLEGAL_FUNCTION = 1
#: 704 points written together with ``WSetEna`` (their offsets from it are asserted).
_BLOCK = ("WSetMod", "WSet", "WSetRvrt", "WSetEnaRvrt")


class SetpointReadBackError(DeviceError, ReadBackError):
    """The setpoint write went through but its read-back shows no watt setpoint in force."""


def _model_704(model_map: ModelMap) -> ModelInstance:
    instance = model_map.find(704)
    if instance is None:
        raise DeviceError("device has no SunSpec model 704 (DER AC controls)")
    return instance


__all__ = [
    "SunSpecDevice",
    "read_droop",
    "read_setpoint",
    "write_droop",
    "write_reversion_timer",
    "write_setpoint",
]


async def write_setpoint(
    client: RegisterClient, model_map: ModelMap, power_w: float, unit_id: int = 1
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
    client: RegisterClient, model_map: ModelMap, unit_id: int = 1
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
    client: RegisterClient, model_map: ModelMap, revert_s: int, unit_id: int = 1
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


# --------------------------------------------------------------------------- 711 droop

_READ_ONLY = 1  # 711 Ctl.ReadOnly: R
_ADOPT_IN_PROGRESS, _ADOPT_COMPLETED, _ADOPT_FAILED = 0, 1, 2
_MAX_READ = 125  # registers per Modbus read
_ILLEGAL_DATA_ADDRESS = 2


@dataclass(frozen=True, slots=True)
class _Model711:
    """Model 711 as read from a device: its layout, raw values and scale factors."""

    instance: ModelInstance
    table: ModelTable
    values: dict[str, Value]
    controls: int
    db_sf: int
    k_sf: int
    rsp_tms_sf: int

    def address(self, name: str) -> int:
        return self.instance.point_address(self.table.point(name).offset)

    def control_set(self, index: int) -> DroopParams | None:
        """``Ctl[index]`` in engineering units; None when the droop law cannot use it.

        Unusable: a point not implemented, or a droop ``KOf``/``KUf`` of 0 (it divides).
        """
        sfs = (self.db_sf, self.db_sf, self.k_sf, self.k_sf, self.rsp_tms_sf)
        scaled: list[float] = []
        for name, sf in zip(_CURVE_POINTS, sfs, strict=True):
            raw = self.values[f"Ctl[{index}].{name}"]
            value = apply_sf(raw, sf) if isinstance(raw, int) else None
            if value is None or (name in ("KOf", "KUf") and value == 0):
                return None
            scaled.append(value)
        return DroopParams(*scaled)


_CURVE_POINTS = ("DbOf", "DbUf", "KOf", "KUf", "RspTms")


def _sf(value: Value) -> int:
    if not isinstance(value, int):
        raise DeviceError("model 711 scale factors Db_SF/K_SF/RspTms_SF not implemented")
    return value


def _table_711(instance: ModelInstance) -> tuple[ModelTable, int]:
    """The 711 layout for the device's ``L``, and its number of control sets."""
    header = load_model(711, {"Ctl": 0}).size
    group = load_model(711, {"Ctl": 1}).size - header
    extra = instance.length + 2 - header
    if extra < group or extra % group:
        raise DeviceError(f"model 711 of length {instance.length} holds no whole control set")
    count = extra // group
    return load_model(711, {"Ctl": count}), count


async def _read_711(client: RegisterClient, model_map: ModelMap, unit_id: int) -> _Model711:
    instance = model_map.find(711)
    if instance is None:
        raise DeviceError("device has no SunSpec model 711 (DER frequency droop)")
    table, count = _table_711(instance)
    read = register_reader(client, unit_id)
    registers: list[int] = []
    while len(registers) < table.size:
        n = min(_MAX_READ, table.size - len(registers))
        registers += await read(instance.address + len(registers), n)
    values = table.decode(registers)
    db_sf, k_sf, rsp_tms_sf = (_sf(values[n]) for n in ("Db_SF", "K_SF", "RspTms_SF"))
    return _Model711(instance, table, values, count, db_sf, k_sf, rsp_tms_sf)


def _curve_registers(model: _Model711, index: int, params: DroopParams) -> list[int]:
    """The registers of ``Ctl[index]`` from ``DbOf`` to ``RspTms`` for ``params``.

    Raises ``ValueError`` for a value the device cannot hold at its scale factors (out of
    the register's range, or a droop that rounds to 0).
    """
    values = (
        (params.db_of_hz, model.db_sf),
        (params.db_uf_hz, model.db_sf),
        (params.k_of, model.k_sf),
        (params.k_uf, model.k_sf),
        (params.response_time_s, model.rsp_tms_sf),
    )
    registers: list[int] = []
    for name, (value, sf) in zip(_CURVE_POINTS, values, strict=True):
        point = model.table.point(f"Ctl[{index}].{name}")
        raw = unscale(value, sf)
        top = (1 << (16 * point.size)) - 2  # all ones means "not implemented"
        low = 1 if name in ("KOf", "KUf") else 0
        if not low <= raw <= top:
            raise ValueError(f"711 {name} = {value:g} does not fit the device (scale 10^{sf})")
        registers += [(raw >> (16 * i)) & 0xFFFF for i in reversed(range(point.size))]
    first, last = (model.table.point(f"Ctl[{index}].{n}") for n in ("DbOf", "RspTms"))
    assert last.offset + last.size - first.offset == len(registers)
    return registers


async def _write(
    client: RegisterClient, address: int, registers: Sequence[int], unit_id: int, what: str
) -> None:
    reply = await client.write_registers(address, list(registers), device_id=unit_id)
    if reply.isError():
        code = getattr(reply, "exception_code", None)
        raise DeviceError(f"{what} refused: Modbus exception {code}", code)


async def _adopt(
    client: RegisterClient,
    model: _Model711,
    index: int,
    unit_id: int,
    *,
    timeout_s: float,
    poll_s: float,
) -> None:
    """Adopt ``Ctl[index]`` (``AdptCtlReq`` = index + 1) and wait for ``AdptCtlRslt``.

    A device with one writable, always active set that refuses ``AdptCtlReq`` (illegal
    data address) has nothing to adopt: the set written is already the one in force.
    """
    try:
        await _write(client, model.address("AdptCtlReq"), [index + 1], unit_id, "711 AdptCtlReq")
    except DeviceError as exc:
        if exc.code == _ILLEGAL_DATA_ADDRESS and index == 0 and model.controls == 1:
            log.debug("711 AdptCtlReq not writable: the one control set is the active one")
            return
        raise
    read = register_reader(client, unit_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        (result,) = await read(model.address("AdptCtlRslt"), 1)
        if result == _ADOPT_FAILED:
            raise DeviceError(f"device refused droop control set {index + 1} (AdptCtlRslt FAILED)")
        if result != _ADOPT_IN_PROGRESS:  # COMPLETED, or not implemented: the read-back tells
            return
        if loop.time() >= deadline:
            raise DeviceError(f"droop adoption still in progress after {timeout_s:g} s")
        await asyncio.sleep(poll_s)


async def write_droop(
    client: RegisterClient,
    model_map: ModelMap,
    unit_id: int,
    params: DroopParams,
    *,
    adopt_timeout_s: float = 5.0,
    poll_s: float = 0.05,
) -> int:
    """Program ``params`` as the device's frequency droop (711) and switch it on.

    Reads 711 (layout from its ``L``, scale factors, which sets are read-only), writes the
    curve into the first writable control set in one function-16 write, adopts that set
    (``AdptCtlReq``, waiting up to ``adopt_timeout_s`` for ``AdptCtlRslt``), then sets
    ``Ena`` = 1. Idempotent: the same call again writes the same registers.

    Returns:
        The 1-based index of the control set now in force.

    Raises:
        DeviceError: No 711, no writable set, a refused write or adoption.
        ValueError: A value the device cannot hold at its scale factors.

    """
    model = await _read_711(client, model_map, unit_id)
    index = next(
        (i for i in range(model.controls) if model.values[f"Ctl[{i}].ReadOnly"] != _READ_ONLY),
        None,
    )
    if index is None:
        raise DeviceError("model 711 has no writable control set (all are ReadOnly)")
    registers = _curve_registers(model, index, params)
    await _write(client, model.address(f"Ctl[{index}].DbOf"), registers, unit_id, "711 droop curve")
    await _adopt(client, model, index, unit_id, timeout_s=adopt_timeout_s, poll_s=poll_s)
    await _write(client, model.address("Ena"), [_ENABLED], unit_id, "711 Ena")
    return index + 1


async def read_droop(
    client: RegisterClient, model_map: ModelMap, unit_id: int = 1
) -> DroopReadback:
    """The frequency droop in force on the device (711), with the device's resolution.

    The set in force is the one ``AdptCtlReq`` names (the first when the point is not
    implemented); ``enabled`` needs ``Ena`` = 1 and ``AdptCtlReq`` != 0 (no active control).
    Raises ``DeviceError`` when the device lacks 711 or refuses the read.
    """
    model = await _read_711(client, model_map, unit_id)
    request = model.values["AdptCtlReq"]
    active = request if isinstance(request, int) and 1 <= request <= model.controls else 1
    return DroopReadback(
        enabled=model.values["Ena"] == _ENABLED and request != 0,
        params=model.control_set(active - 1),
        db_step_hz=10.0**model.db_sf,
        k_step=10.0**model.k_sf,
        response_step_s=10.0**model.rsp_tms_sf,
    )


class SunSpecDevice:
    """A SunSpec inverter: the writer's ``SetpointDevice`` (704) and ``DroopProgrammable`` (711).

    The setpoint is never in force without its fail-safe: before the first setpoint on a
    connection the device gets its reversion (``WSetEnaRvrt`` = enabled, ``WSetRvrtTms`` =
    ``revert_s``), and every setpoint write carries ``WSetRvrt`` = ``default_w``, so should
    the writer go silent the device goes back to its default ``revert_s`` after the last
    write. The keep-alive commands of the pipeline (``dispatch.refresh_s``) must come more
    often than ``revert_s``. A device that reboots drops the connection, and the next one
    sets the reversion again; the read-back checks it too and sets it again if it is gone.

    Per command (``write_read_back``): one function-23 request that writes ``WSetEna``,
    ``WSetMod``, ``WSet``, ``WSetRvrt`` and reads ``WSetEna`` .. ``WSetRvrtTms`` back after
    the write; for a device without function 23, one function-16 write and one function-3
    read. ``WSet_SF`` is read once per connection.
    """

    def __init__(
        self,
        client: RegisterClient,
        model_map: ModelMap,
        unit_id: int,
        revert_s: int,
        *,
        default_w: float = 0.0,
    ) -> None:
        if revert_s < 1:
            raise ValueError(f"revert_s: expected >= 1 s (the fail-safe), got {revert_s!r}")
        self.client = client
        self.model_map = model_map
        self.unit_id = unit_id
        self.revert_s = revert_s
        self.default_w = default_w
        self._sf: int | None = None
        self._reversion_set = False
        #: Whether to write and read back in one function-23 request (False once the
        #: device answered it with illegal function).
        self.read_write = True
        instance = _model_704(model_map)
        table = load_model(704)
        self._ena = instance.point_address(table.point("WSetEna").offset)
        self._sf_address = instance.point_address(table.point("WSet_SF").offset)
        self._rvrt_ena = instance.point_address(table.point("WSetEnaRvrt").offset)
        tms = table.point("WSetRvrtTms")
        self._span = tms.offset + tms.size - table.point("WSetEna").offset
        offsets = {n: table.point(n).offset - table.point("WSetEna").offset for n in _BLOCK}
        assert offsets == {"WSetMod": 1, "WSet": 2, "WSetRvrt": 4, "WSetEnaRvrt": 8}

    async def _scale(self) -> int:
        if self._sf is None:
            read = register_reader(self.client, self.unit_id)
            sf_raw = decode("sunssf", await read(self._sf_address, 1))
            self._sf = sf_raw if isinstance(sf_raw, int) else 0
        return self._sf

    async def _set_reversion(self) -> None:
        await _write(
            self.client,
            self._rvrt_ena,
            [_ENABLED, (self.revert_s >> 16) & 0xFFFF, self.revert_s & 0xFFFF],
            self.unit_id,
            "704 reversion",
        )
        self._reversion_set = True

    async def _setpoint_registers(self, setpoint_w: float) -> list[int]:
        """``WSetEna`` .. ``WSetRvrt`` for ``setpoint_w``; sets the reversion first if needed."""
        sf = await self._scale()
        if not self._reversion_set:
            await self._set_reversion()
        raw = unscale(sunspec_w_from_power_w(setpoint_w), sf) & 0xFFFFFFFF
        rvrt = unscale(sunspec_w_from_power_w(self.default_w), sf) & 0xFFFFFFFF
        return [_ENABLED, _WATTS_MODE, raw >> 16, raw & 0xFFFF, rvrt >> 16, rvrt & 0xFFFF]

    async def write(self, setpoint_w: float) -> None:
        """Write the setpoint (gridflex sign, W) with the default to revert to."""
        registers = await self._setpoint_registers(setpoint_w)
        await _write(self.client, self._ena, registers, self.unit_id, "setpoint write")

    async def read_back(self) -> float:
        """The setpoint in force, W; ``DeviceError`` when no watt setpoint is in force."""
        regs = await register_reader(self.client, self.unit_id)(self._ena, self._span)
        return await self._setpoint_in(regs)

    async def write_read_back(self, setpoint_w: float) -> float:
        """``write`` then ``read_back`` in one function-23 round trip; the setpoint read, W.

        Function 23 (Read/Write Multiple Registers) writes the block and reads
        ``WSetEna`` .. ``WSetRvrtTms`` after the write, in one request. A device that
        answers it with exception 1 (illegal function: real inverters may not implement
        23) wrote nothing; it gets function 16 then 3 from then on. Raises like ``write``
        (``DeviceError`` "setpoint write refused") and ``read_back``.
        """
        readwrite = getattr(self.client, "readwrite_registers", None)
        if not self.read_write or readwrite is None:
            await self.write(setpoint_w)
            return await self.read_back()
        registers = await self._setpoint_registers(setpoint_w)
        reply = await readwrite(
            read_address=self._ena,
            read_count=self._span,
            write_address=self._ena,
            values=registers,
            device_id=self.unit_id,
        )
        if reply.isError():
            code = getattr(reply, "exception_code", None)
            if code == _ILLEGAL_FUNCTION:
                log.info(
                    "device %d answers function 23 with illegal function: 16 then 3 from now",
                    self.unit_id,
                )
                self.read_write = False
                return await self.write_read_back(setpoint_w)
            raise DeviceError(f"setpoint write refused: Modbus exception {code}", code)
        regs = reply.registers
        if len(regs) != self._span:
            raise SetpointReadBackError(
                f"asked {self._span} registers at {self._ena}, got {len(regs)}"
            )
        try:  # the write went through: whatever fails now fails the read-back
            return await self._setpoint_in(regs)
        except ReadBackError:
            raise
        except Exception as exc:
            raise SetpointReadBackError(str(exc)) from exc

    async def _setpoint_in(self, regs: Sequence[int]) -> float:
        """The setpoint in the 704 block ``regs`` (``WSetEna`` .. ``WSetRvrtTms``), W.

        Sets the reversion again when the block shows it lost (a device restarted).
        """
        sf = await self._scale()
        raw = decode("int32", regs, 2)
        if regs[0] != _ENABLED or regs[1] != _WATTS_MODE or not isinstance(raw, int):
            raise SetpointReadBackError("no active-power setpoint in force (704 WSetEna/WSetMod)")
        tms = decode("uint32", regs, self._span - 2)
        if regs[8] != _ENABLED or tms != self.revert_s:
            log.warning("704 reversion lost (device restarted?): setting it again")
            await self._set_reversion()
        return power_w_from_sunspec(raw * 10.0**sf)

    async def program_droop(self, params: DroopParams) -> DroopReadback:
        """Program the droop (711), read it back; ``DeviceError`` when it did not take.

        The read-back may differ from ``params`` by half a step of the device's scale
        factors (it rounds), not more.
        """
        await write_droop(self.client, self.model_map, self.unit_id, params)
        readback = await self.read_droop()
        differences = readback.differences(params)
        if differences:
            raise DeviceError("droop read-back differs: " + "; ".join(differences))
        return readback

    async def read_droop(self) -> DroopReadback:
        """The droop in force on the device (711)."""
        return await read_droop(self.client, self.model_map, self.unit_id)
