"""Modbus TCP connections to one device and SunSpec discovery over them.

``modbus_connection`` gives the lean function-3 client (``collectors.modbus.fast``, the
default) or ``PymodbusConnection`` (pymodbus' async client, ``retries=0`` and
``reconnect_delay=0``: the collector's own retry loop re-discovers a returning device).
``register_reader`` adapts a pymodbus client to ``ReadRegisters``; ``discover_plan`` walks
the SunSpec map, reads the scale factors and capabilities once and plans the polls.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Sequence
from typing import Any, Literal, Protocol

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse

from collectors.modbus.fast import DeviceError, LeanModbusClient, Ticker
from collectors.modbus.plan import POLLED, PollPlan, build_plan
from gridflex.contract import Capabilities
from gridflex.sunspec.codec import Value, apply_sf, decode
from gridflex.sunspec.discovery import IllegalAddress, ReadRegisters, discover, plan_reads
from gridflex.sunspec.tables import load_model

__all__ = [
    "MODBUS_CLIENTS",
    "ModbusClientKind",
    "ModbusConnection",
    "PymodbusConnection",
    "RegisterClient",
    "discover_plan",
    "modbus_connection",
    "register_reader",
]


class _HoldingRegistersResponse(ReadHoldingRegistersResponse):
    """pymodbus' function-3 response with a one-call decode.

    Registered on each client through pymodbus' public ``client.register()`` hook: the
    stock class unpacks register by register and formats itself for a debug log line on
    every reply, which was ~60 % of the client's decode time per poll here.
    """

    def decode(self, data: bytes) -> None:
        """Decode ``byte count, registers...`` in one ``struct`` call."""
        count = data[0]
        if count >= len(data) or count % 2:
            raise ModbusIOException(f"byte_count {count} does not fit a {len(data)}-byte reply")
        self.registers = list(struct.unpack_from(f">{count // 2}H", data, 1))

    def __str__(self) -> str:
        return f"ReadHoldingRegistersResponse({len(self.registers)} registers)"


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


ModbusClientKind = Literal["lean", "pymodbus"]
MODBUS_CLIENTS: tuple[ModbusClientKind, ...] = ("lean", "pymodbus")


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


class PymodbusConnection:
    """``ModbusConnection`` over pymodbus' ``AsyncModbusTcpClient``.

    ``retries=0`` and ``reconnect_delay=0``: the collector's own retry loop re-discovers a
    returning device and shows its backoff in the asset status.
    """

    def __init__(self, host: str, port: int, *, timeout_s: float) -> None:
        self.host, self.port = host, port
        self.client = AsyncModbusTcpClient(
            host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0
        )
        self.client.register(_HoldingRegistersResponse)

    async def connect(self) -> None:
        """Open the connection; ``ConnectionError`` when the device does not accept it."""
        if not await self.client.connect():
            raise ConnectionError(f"cannot connect to {self.host}:{self.port}")

    def reader(self, unit_id: int) -> ReadRegisters:
        """See ``register_reader``."""
        return register_reader(self.client, unit_id)

    def close(self) -> None:
        """Close the connection."""
        self.client.close()


def modbus_connection(
    kind: ModbusClientKind,
    host: str,
    port: int,
    *,
    timeout_s: float,
    ticker: Ticker | None = None,
) -> ModbusConnection:
    """A not yet connected client of ``kind``: ``lean`` (the default) or ``pymodbus``.

    ``ticker`` keeps the lean client's request deadlines (see ``Ticker``).
    """
    if kind == "lean":
        return LeanModbusClient(host, port, timeout_s=timeout_s, ticker=ticker)
    return PymodbusConnection(host, port, timeout_s=timeout_s)


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
