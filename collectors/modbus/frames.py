"""Modbus TCP frames for the lean client (pure, no I/O): MBAP, functions 3, 16 and 23.

The codec of :mod:`collectors.modbus.fast` (which re-exports every name): requests are
encoded into one ``bytes``, responses decoded from their PDU (function code first), and
``FrameBuffer`` cuts a TCP byte stream into MBAP frames. Normal and exception responses:
an exception 2 raises ``IllegalAddress`` (SunSpec discovery probes with it), any other
exception a ``DeviceError`` carrying the Modbus exception ``code``.

Reference: Modbus Application Protocol Specification V1.1b3, sections 4.1 (PDU), 6.3
(Read Holding Registers), 6.12 (Write Multiple Registers), 6.17 (Read/Write Multiple
Registers: the write is performed before the read) and 7 (exception responses); Modbus
Messaging on TCP/IP Implementation Guide V1.0b, section 3.1.3 (MBAP header).
"""

from __future__ import annotations

import struct

from gridflex.sunspec.discovery import MAX_READ_REGISTERS, IllegalAddress

__all__ = [
    "ILLEGAL_DATA_ADDRESS",
    "ILLEGAL_FUNCTION",
    "MAX_READ_WRITE_REGISTERS",
    "MAX_WRITE_REGISTERS",
    "READ_HOLDING_REGISTERS",
    "READ_WRITE_MULTIPLE_REGISTERS",
    "WRITE_MULTIPLE_REGISTERS",
    "DeviceError",
    "FrameBuffer",
    "GarbledReply",
    "NotModbusTcp",
    "decode_read_response",
    "decode_read_write_response",
    "decode_write_response",
    "encode_read_request",
    "encode_read_write_request",
    "encode_write_request",
    "registers",
]

READ_HOLDING_REGISTERS = 3
WRITE_MULTIPLE_REGISTERS = 16
READ_WRITE_MULTIPLE_REGISTERS = 23
ILLEGAL_FUNCTION = 1
#: Most registers one function-16 request may write (Modbus spec 6.12).
MAX_WRITE_REGISTERS = 123
#: Most registers one function-23 request may write (Modbus spec 6.17); it reads up to 125.
MAX_READ_WRITE_REGISTERS = 121
ILLEGAL_DATA_ADDRESS = 2
_EXCEPTION_BIT = 0x80
_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id (0), length, unit id
_READ_REQUEST = struct.Struct(">HHHBBHH")  # MBAP + function, address, count
#: MBAP + function 23, read address and count, write address, count and byte count.
_READ_WRITE_HEADER = struct.Struct(">HHHBBHHHHB")
_MAX_MBAP_LENGTH = 254  # unit id + PDU of at most 253 bytes
_REGISTERS = [struct.Struct(f">{n}H") for n in range(MAX_READ_REGISTERS + 1)]


class DeviceError(Exception):
    """A device answered, but not usably (Modbus exception, wrong length, bad map).

    ``code`` is the Modbus exception code when the device answered with an exception
    response (1 illegal function, 2 illegal data address, 3 illegal data value, ...).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class GarbledReply(TimeoutError):
    """No reply to the request in time, but bytes that were not its reply came meanwhile.

    Another transaction's or unit's frame, a truncated frame: the device answered, not
    usably. A ``TimeoutError`` (the poll loop treats it like one: the next slot is tried on
    the same connection), told apart so that a device answering garbage is not taken for a
    silent one (``collectors.modbus.poller.classify_failure``).
    """


# --------------------------------------------------------------------------- pure: codec


def encode_read_request(tid: int, unit_id: int, address: int, count: int) -> bytes:
    """MBAP frame of a function-3 request for ``count`` registers from ``address``."""
    if not 1 <= count <= MAX_READ_REGISTERS:
        raise ValueError(f"count {count}: a read returns 1..{MAX_READ_REGISTERS} registers")
    if not 0 <= address <= 0xFFFF - count + 1:
        raise ValueError(f"registers {address}..{address + count - 1} are outside 0..65535")
    return _READ_REQUEST.pack(tid, 0, 6, unit_id, READ_HOLDING_REGISTERS, address, count)


def decode_read_response(pdu: bytes, address: int, count: int) -> bytes:
    """Register data (``2 * count`` big-endian bytes) of a function-3 response PDU.

    ``pdu`` starts with the function code. Raises ``IllegalAddress`` for Modbus exception
    2, ``DeviceError`` (with ``code``) for other exception responses, and ``DeviceError``
    for a reply of the wrong function or length.
    """
    if len(pdu) == 2 and pdu[0] == READ_HOLDING_REGISTERS | _EXCEPTION_BIT:
        code = pdu[1]
        if code == ILLEGAL_DATA_ADDRESS:
            raise IllegalAddress(address)
        raise DeviceError(f"Modbus exception {code} reading {count} at {address}", code)
    if len(pdu) < 2 or pdu[0] != READ_HOLDING_REGISTERS:
        raise DeviceError(f"unexpected reply (function {pdu[0] if pdu else None}) to a read")
    if pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
        raise DeviceError(
            f"asked {count} registers at {address}, got {(len(pdu) - 2) // 2} "
            f"with a byte count of {pdu[1]}"
        )
    return pdu[2:]


def encode_write_request(tid: int, unit_id: int, address: int, values: list[int]) -> bytes:
    """MBAP frame of a function-16 request writing ``values`` (16-bit) from ``address``."""
    count = len(values)
    if not 1 <= count <= MAX_WRITE_REGISTERS:
        raise ValueError(f"{count} registers: a write takes 1..{MAX_WRITE_REGISTERS}")
    if not 0 <= address <= 0xFFFF - count + 1:
        raise ValueError(f"registers {address}..{address + count - 1} are outside 0..65535")
    if any(not 0 <= v <= 0xFFFF for v in values):
        raise ValueError(f"register values must be 0..65535, got {values}")
    header = struct.pack(
        ">HHHBBHHB", tid, 0, 7 + 2 * count, unit_id, WRITE_MULTIPLE_REGISTERS, address, count,
        2 * count,
    )  # fmt: skip
    return header + _REGISTERS[count].pack(*values)


def decode_write_response(pdu: bytes, address: int, count: int) -> None:
    """Check a function-16 response PDU: it must echo ``address`` and ``count``.

    Raises ``DeviceError`` (with ``code``) for an exception response (an exception 2 too:
    a refused write is not a discovery probe) and for a reply that echoes something else.
    """
    if len(pdu) == 2 and pdu[0] == WRITE_MULTIPLE_REGISTERS | _EXCEPTION_BIT:
        code = pdu[1]
        raise DeviceError(f"Modbus exception {code} writing {count} at {address}", code)
    if len(pdu) != 5 or pdu[0] != WRITE_MULTIPLE_REGISTERS:
        raise DeviceError(f"unexpected reply (function {pdu[0] if pdu else None}) to a write")
    echoed_address, echoed_count = struct.unpack(">HH", pdu[1:5])
    if (echoed_address, echoed_count) != (address, count):
        raise DeviceError(
            f"wrote {count} at {address}, the device echoed {echoed_count} at {echoed_address}"
        )


def encode_read_write_request(
    tid: int,
    unit_id: int,
    *,
    read_address: int,
    read_count: int,
    write_address: int,
    values: list[int],
) -> bytes:
    """MBAP frame of a function-23 request: write, then read, in one transaction.

    The device writes ``values`` from ``write_address``, then answers with ``read_count``
    registers from ``read_address`` (spec 6.17: the write is performed before the read).
    """
    count = len(values)
    if not 1 <= read_count <= MAX_READ_REGISTERS:
        raise ValueError(f"read count {read_count}: a read returns 1..{MAX_READ_REGISTERS}")
    if not 1 <= count <= MAX_READ_WRITE_REGISTERS:
        raise ValueError(f"{count} registers: a read/write takes 1..{MAX_READ_WRITE_REGISTERS}")
    for address, n in ((read_address, read_count), (write_address, count)):
        if not 0 <= address <= 0xFFFF - n + 1:
            raise ValueError(f"registers {address}..{address + n - 1} are outside 0..65535")
    if min(values) < 0 or max(values) > 0xFFFF:
        raise ValueError(f"register values must be 0..65535, got {values}")
    header = _READ_WRITE_HEADER.pack(
        tid, 0, 11 + 2 * count, unit_id, READ_WRITE_MULTIPLE_REGISTERS,
        read_address, read_count, write_address, count, 2 * count,
    )  # fmt: skip
    return header + _REGISTERS[count].pack(*values)


def decode_read_write_response(pdu: bytes, address: int, count: int) -> bytes:
    """Register data (``2 * count`` bytes) of a function-23 response PDU (the read part).

    Raises ``DeviceError`` (with ``code``) for an exception response, exception 2 too (a
    refused write is not a discovery probe; exception 1, illegal function, is a device
    without function 23), and for a reply of the wrong function or length.
    """
    if len(pdu) == 2 and pdu[0] == READ_WRITE_MULTIPLE_REGISTERS | _EXCEPTION_BIT:
        code = pdu[1]
        raise DeviceError(f"Modbus exception {code} to a read/write of {count} at {address}", code)
    if len(pdu) < 2 or pdu[0] != READ_WRITE_MULTIPLE_REGISTERS:
        raise DeviceError(f"unexpected reply (function {pdu[0] if pdu else None}) to a read/write")
    if pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
        raise DeviceError(
            f"asked {count} registers at {address}, got {(len(pdu) - 2) // 2} "
            f"with a byte count of {pdu[1]}"
        )
    return pdu[2:]


def registers(data: bytes) -> list[int]:
    """The 16-bit registers in big-endian register ``data``."""
    return list(_REGISTERS[len(data) // 2].unpack(data))


class NotModbusTcp(DeviceError):
    """The byte stream broke off: ``frames`` are the complete frames that came before."""

    def __init__(self, message: str, frames: list[tuple[int, int, bytes]]) -> None:
        super().__init__(message)
        self.frames = frames


class FrameBuffer:
    """Reassembles MBAP frames from a TCP byte stream (pure: bytes in, frames out)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Add ``data``; return the complete frames as ``(transaction id, unit id, PDU)``.

        An incomplete frame stays buffered for the next call. Raises ``NotModbusTcp`` (a
        ``DeviceError``) when the stream is not Modbus TCP (protocol id not 0 or an
        impossible length): the connection cannot be resynchronised after that, and the
        buffer is dropped; the frames complete before the bad bytes are on the exception.
        """
        buf = self._buffer
        buf += data
        frames: list[tuple[int, int, bytes]] = []
        start = 0
        while len(buf) - start >= _MBAP.size:
            tid, protocol, length, unit = _MBAP.unpack_from(buf, start)
            if protocol != 0 or not 2 <= length <= _MAX_MBAP_LENGTH:
                buf.clear()
                raise NotModbusTcp(
                    f"not a Modbus TCP reply (protocol {protocol}, length {length})", frames
                )
            end = start + 6 + length
            if len(buf) < end:
                break
            frames.append((tid, unit, bytes(buf[start + _MBAP.size : end])))
            start = end
        del buf[:start]
        return frames


# --------------------------------------------------------------------------- I/O
