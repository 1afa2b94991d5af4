"""Test helper: a Modbus client that talks to a simulated inverter's register image.

:class:`ImageClient` offers the part of pymodbus's ``AsyncModbusTcpClient`` that
``control.sunspec`` uses (``connected``, ``read_holding_registers``, ``write_registers``)
and turns each call into a Modbus PDU for ``SimulatedInverter.handle_pdu``: the same
requests and answers as over TCP, without a socket. ``on_write`` lets a test play a device
that misbehaves after a write.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from simulators.inverter import SimulatedInverter

__all__ = ["ImageClient", "Reply"]


@dataclass
class Reply:
    """A pymodbus-like response: ``registers`` or an ``exception_code``."""

    registers: list[int] = field(default_factory=list)
    exception_code: int | None = None

    def isError(self) -> bool:  # pymodbus's name
        """Whether the device answered with a Modbus exception."""
        return self.exception_code is not None


@dataclass
class ImageClient:
    """``AsyncModbusTcpClient`` stand-in over ``device.handle_pdu`` (function codes 3, 16)."""

    device: SimulatedInverter
    connected: bool = True
    on_write: Callable[[int, list[int]], None] | None = None
    writes: list[tuple[int, list[int]]] = field(default_factory=list)

    async def read_holding_registers(self, address: int, *, count: int, device_id: int) -> Reply:
        """Function 3."""
        answer = self.device.handle_pdu(device_id, struct.pack(">BHH", 3, address, count))
        if answer[0] & 0x80:
            return Reply(exception_code=answer[1])
        return Reply(registers=list(struct.unpack_from(f">{answer[1] // 2}H", answer, 2)))

    async def write_registers(self, address: int, values: list[int], *, device_id: int) -> Reply:
        """Function 16; ``on_write`` runs after a write the device took."""
        pdu = struct.pack(
            f">BHHB{len(values)}H", 16, address, len(values), 2 * len(values), *values
        )
        answer = self.device.handle_pdu(device_id, pdu)
        if answer[0] & 0x80:
            return Reply(exception_code=answer[1])
        self.writes.append((address, list(values)))
        if self.on_write is not None:
            self.on_write(address, list(values))
        return Reply()
