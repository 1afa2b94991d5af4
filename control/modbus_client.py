"""The control writer's Modbus TCP client: the project's lean client behind pymodbus' interface.

The SunSpec writes (``control.sunspec``) speak pymodbus' client interface
(``read_holding_registers`` / ``write_registers`` / ``readwrite_registers`` returning a reply
with ``isError()``, :class:`RegisterClient`). :class:`LeanRegisterClient` is that interface
over ``collectors.modbus.fast.LeanModbusClient`` (function 3, 16 and 23 over an asyncio
Protocol, one request in flight): at a frequency step every asset gets a command within
one poll period, so the writer's per-request cost decides its p99.

``open_client`` is the command's only way to a device. ``OpenRegisterClient`` is its type:
the seam through which the benchmarks' baseline (``bench/baselines.py``, run by
``bench/closed_loop.py``) plugs pymodbus' ``AsyncModbusTcpClient`` in, which also fits
:class:`RegisterClient`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from collectors.modbus.connection import RegisterClient
from collectors.modbus.fast import DeviceError, LeanModbusClient
from gridflex.sunspec.discovery import IllegalAddress

__all__ = [
    "LeanRegisterClient",
    "OpenRegisterClient",
    "RegisterClient",
    "open_client",
]


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

    async def readwrite_registers(
        self,
        *,
        read_address: int,
        read_count: int,
        write_address: int,
        values: list[int],
        device_id: int,
    ) -> _Reply:
        """Function 23: write ``values``, then read, in one request."""
        try:
            async with self._turn:
                registers = await self._client.read_write(
                    read_address, read_count, write_address, values, device_id
                )
        except DeviceError as exc:
            if exc.code is None:
                raise
            return _Reply(exception_code=exc.code)
        return _Reply(registers)

    def close(self) -> None:
        """Close the connection."""
        self._client.close()


class OpenRegisterClient(Protocol):
    """Opens a connected ``RegisterClient``; raises ``ConnectionError`` when it cannot."""

    def __call__(self, host: str, port: int, *, timeout_s: float) -> Awaitable[RegisterClient]:
        """The connected client."""
        ...


async def open_client(host: str, port: int, *, timeout_s: float) -> RegisterClient:
    """A connected ``LeanRegisterClient``; raises ``ConnectionError`` when none can be opened."""
    client = LeanRegisterClient(host, port, timeout_s=timeout_s)
    if not await client.connect():
        client.close()
        raise ConnectionError(f"cannot connect to {host}:{port}")
    return client
