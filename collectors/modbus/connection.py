"""Modbus TCP connections to one device and SunSpec discovery over them.

The collector has one Modbus client, the lean function-3 client
(``collectors.modbus.fast.LeanModbusClient``). ``ModbusConnection`` is what a poller needs
of a connection and ``ConnectionFactory`` how it gets one: the seam through which the
benchmarks' baseline (``bench/baselines.py``) and the tests' oracle plug pymodbus' client
in; no command offers it. ``register_reader`` adapts a client with pymodbus' interface
(``RegisterClient``: the control writer's) to ``ReadRegisters``; ``discover_plan`` walks
the SunSpec map, reads the scale factors and capabilities once and plans the polls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol

from collectors.modbus.fast import DeviceError, Ticker
from collectors.modbus.plan import POLLED, PollPlan, build_plan
from gridflex.contract import Capabilities
from gridflex.sunspec.codec import Value, apply_sf, decode
from gridflex.sunspec.discovery import IllegalAddress, ReadRegisters, discover, plan_reads
from gridflex.sunspec.tables import load_model

__all__ = [
    "ConnectionFactory",
    "ModbusConnection",
    "RegisterClient",
    "discover_plan",
    "register_reader",
]


class RegisterClient(Protocol):
    """The part of pymodbus' async client the SunSpec writes use."""

    @property
    def connected(self) -> bool:
        """Whether the connection is open."""

    def read_holding_registers(self, address: int, *, count: int, device_id: int) -> Awaitable[Any]:
        """Function 3; the reply has ``isError()``, ``registers``, ``exception_code``."""

    def write_registers(self, address: int, values: list[int], *, device_id: int) -> Awaitable[Any]:
        """Function 16; the reply has ``isError()`` and ``exception_code``."""

    def close(self) -> None:
        """Close the connection."""


def register_reader(client: RegisterClient, unit_id: int) -> ReadRegisters:
    """An async ``read(address, count)`` over ``client`` for discovery and polls.

    Raises ``IllegalAddress`` for Modbus exception 2, ``DeviceError`` for other exceptions
    and short replies, ``ConnectionError`` once the connection is gone.
    """

    async def read(address: int, count: int) -> Sequence[int]:
        if not client.connected:
            # pymodbus would reconnect silently; a returning device must be re-discovered.
            raise ConnectionError("connection to the device was lost")
        reply = await client.read_holding_registers(address, count=count, device_id=unit_id)
        if reply.isError():
            code = getattr(reply, "exception_code", None)
            if code == 2:
                raise IllegalAddress(address)
            raise DeviceError(f"Modbus exception {code} reading {count} at {address}", code)
        registers = reply.registers
        if len(registers) != count:
            raise DeviceError(f"asked {count} registers at {address}, got {len(registers)}")
        return registers

    return read


class ModbusConnection(Protocol):
    """What ``DevicePoller`` needs of a Modbus TCP client (one connection to one device)."""

    async def connect(self) -> None:
        """Open the connection; raises ``OSError`` (``TimeoutError``, ``ConnectionError``)."""
        ...

    def reader(self, unit_id: int) -> ReadRegisters:
        """``read(address, count)`` of holding registers, as discovery and polls use it."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


class ConnectionFactory(Protocol):
    """A not yet connected ``ModbusConnection`` to one device.

    ``LeanModbusClient`` (the class) is the collector's; ``ticker`` keeps its request
    deadlines (see ``Ticker``), other clients may ignore it.
    """

    def __call__(
        self, host: str, port: int, *, timeout_s: float, ticker: Ticker | None = None
    ) -> ModbusConnection:
        """The connection, not yet opened."""
        ...


async def discover_plan(
    read: ReadRegisters,
    *,
    site_max_charge_w: float | None = None,
    site_max_discharge_w: float | None = None,
) -> PollPlan:
    """Discover a device, read its scale factors and capabilities, and plan its polls.

    The capabilities carry the device's 702 ratings (``rated_*``) and the site file's
    limits of the asset (``site_max_*``) as given.
    """
    model_map = await discover(read)
    tables = {m: load_model(m) for m in (1, 701, 702, 704, 713) if model_map.find(m)}
    wanted: dict[tuple[int, str], int] = {}
    for _field, model_id, point_name, _high in POLLED:
        instance = model_map.find(model_id)
        sf_name = tables[model_id].point(point_name).sf if instance else None
        if instance and sf_name:
            wanted[(model_id, sf_name)] = instance.point_address(
                tables[model_id].point(sf_name).offset
            )
    extra = {
        (702, "WChaRteMaxRtg"),
        (702, "WDisChaRteMaxRtg"),
        (702, "W_SF"),
        (713, "WHRtg"),
        (713, "WH_SF"),
    }
    for model_id, name in extra:
        instance = model_map.find(model_id)
        if instance:
            wanted[(model_id, name)] = instance.point_address(tables[model_id].point(name).offset)
    values: dict[tuple[int, str], int | None] = {}
    for address, count in plan_reads((a, 1) for a in wanted.values()):
        block = await read(address, count)
        for key, a in wanted.items():
            if address <= a < address + count:
                point = tables[key[0]].point(key[1])
                raw = decode(point.type, block, a - address)
                values[key] = raw if isinstance(raw, int) else None
    common: dict[str, Value] = {}
    if (instance := model_map.find(1)) is not None:
        table = tables[1]
        common = table.decode(await read(instance.address, table.size), ["Mn", "Md", "SN", "Vr"])

    def scaled(model_id: int, name: str, sf: str) -> float | None:
        return apply_sf(values.get((model_id, name)), values.get((model_id, sf)))

    capabilities = Capabilities(
        protocol="sunspec",
        models=model_map.model_ids,
        rated_charge_w=scaled(702, "WChaRteMaxRtg", "W_SF"),
        rated_discharge_w=scaled(702, "WDisChaRteMaxRtg", "W_SF"),
        site_max_charge_w=site_max_charge_w,
        site_max_discharge_w=site_max_discharge_w,
        capacity_wh=scaled(713, "WHRtg", "WH_SF"),
        v2x=model_map.find(713) is not None,
        manufacturer=_text(common.get("Mn")),
        model=_text(common.get("Md")),
        serial=_text(common.get("SN")),
        firmware=_text(common.get("Vr")),
    )
    return build_plan(model_map, tables, values, capabilities)


def _text(value: Value) -> str | None:
    return value if isinstance(value, str) else None
