"""The Modbus TCP clients the control writer can use: pymodbus, or the project's lean client.

The SunSpec writes (``control.sunspec``) speak pymodbus' client interface
(``read_holding_registers`` / ``write_registers`` returning a reply with ``isError()``), so
either client fits behind :class:`RegisterClient`:

- ``pymodbus``: ``AsyncModbusTcpClient``, the well-kept library;
- ``lean`` (default): :class:`LeanRegisterClient`, pymodbus' interface over
  ``collectors.modbus.fast.LeanModbusClient`` (function 3 and 16 over an asyncio Protocol,
  one request in flight). At a frequency step every asset gets a command within one poll
  period, so the writer's per-request cost decides its p99; ``bench/closed_loop.py
  --modbus-client`` compares the two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus.connection import RegisterClient
from collectors.modbus.fast import DeviceError, LeanModbusClient
from gridflex.sunspec.discovery import IllegalAddress

__all__ = [
    "CONTROL_MODBUS_CLIENTS",
    "ControlModbusClient",
    "LeanRegisterClient",
    "RegisterClient",
    "open_client",
]

ControlModbusClient = Literal["lean", "pymodbus"]
CONTROL_MODBUS_CLIENTS: tuple[ControlModbusClient, ...] = ("lean", "pymodbus")


@dataclass(slots=True)
class _Reply:
    registers: Sequence[int] = field(default_factory=list)
    exception_code: int | None = None

    def isError(self) -> bool:  # pymodbus' name
        return self.exception_code is not None


class LeanRegisterClient:
    """pymodbus' ``read_holding_registers``/``write_registers`` over ``LeanModbusClient``.

    A Modbus exception comes back as a reply with ``exception_code`` (as pymodbus does);
    timeouts and a lost connection raise (``TimeoutError``, ``ConnectionError``). Requests
    from several tasks (the command worker and the local-droop supervisor share a device)
    take turns: the connection carries one request at a time.
    """

    def __init__(self, host: str, port: int, *, timeout_s: float) -> None:
        self._client = LeanModbusClient(host, port, timeout_s=timeout_s)
        self._turn = asyncio.Lock()

    async def connect(self) -> bool:
        """Open the connection; False when it cannot be opened (as pymodbus)."""
        try:
            await self._client.connect()
        except (OSError, TimeoutError):
            return False
        return True

    @property
    def connected(self) -> bool:
        """Whether the connection is open."""
        return self._client.connected

    async def read_holding_registers(self, address: int, *, count: int, device_id: int) -> _Reply:
        """Function 3."""
        try:
            async with self._turn:
                return _Reply(await self._client.read(address, count, device_id))
        except IllegalAddress:
            return _Reply(exception_code=2)
        except DeviceError as exc:
            if exc.code is None:
                raise
            return _Reply(exception_code=exc.code)

    async def write_registers(self, address: int, values: list[int], *, device_id: int) -> _Reply:
        """Function 16."""
        try:
            async with self._turn:
                await self._client.write(address, values, device_id)
        except DeviceError as exc:
            if exc.code is None:
                raise
            return _Reply(exception_code=exc.code)
        return _Reply()

    def close(self) -> None:
        """Close the connection."""
        self._client.close()


async def open_client(
    kind: ControlModbusClient, host: str, port: int, *, timeout_s: float
) -> RegisterClient:
    """A connected client of ``kind``; raises ``ConnectionError`` when none can be opened."""
    client: LeanRegisterClient | AsyncModbusTcpClient
    if kind == "lean":
        client = LeanRegisterClient(host, port, timeout_s=timeout_s)
    else:
        client = AsyncModbusTcpClient(
            host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0
        )
    if not await client.connect():
        client.close()
        raise ConnectionError(f"cannot connect to {host}:{port}")
    return client
