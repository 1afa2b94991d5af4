"""Encode and decode SunSpec point values to and from 16-bit Modbus registers.

Pure functions, no I/O. Registers are unsigned 16-bit integers, big-endian word order
(the most significant register first), as the SunSpec Modbus specification requires.

Reference: SunSpec Modbus Specification (SunSpec Alliance), section "Data types":
``int16``/``uint16``/``count``/``acc16``, ``int32``/``uint32``/``acc32``,
``int64``/``uint64``/``acc64``, ``enum16``/``enum32``, ``bitfield16``/``bitfield32``,
``float32``, ``string`` (two ASCII/UTF-8 bytes per register, NUL padded), ``sunssf``
(a signed power-of-ten exponent), ``pad``. Each type has a *not implemented* value; a device
puts it in a register it does not support, and ``decode`` turns it into ``None``:

=====================================  ===================
type                                   not implemented
=====================================  ===================
int16, sunssf                          0x8000
uint16, count, enum16, bitfield16      0xFFFF
acc16, acc32, acc64                    0
int32                                  0x80000000
uint32, enum32, bitfield32             0xFFFFFFFF
int64                                  0x8000000000000000
uint64                                 0xFFFFFFFFFFFFFFFF
float32                                NaN (0x7FC00000)
string                                 all registers zero
pad                                    (no value)
=====================================  ===================
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence

__all__ = [
    "SIZES",
    "CodecError",
    "apply_sf",
    "decode",
    "decoder",
    "encode",
    "not_implemented",
    "unscale",
]

Value = int | float | str | None


class CodecError(ValueError):
    """A value that cannot be encoded as, or registers that cannot be decoded as, a type."""


#: Registers per type (``string`` has the size given by its point).
SIZES: dict[str, int] = {
    "int16": 1,
    "uint16": 1,
    "count": 1,
    "acc16": 1,
    "enum16": 1,
    "bitfield16": 1,
    "sunssf": 1,
    "pad": 1,
    "int32": 2,
    "uint32": 2,
    "acc32": 2,
    "enum32": 2,
    "bitfield32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "acc64": 4,
}

# (bits, signed, not-implemented raw value) of the integer types.
_INT_TYPES: dict[str, tuple[int, bool, int]] = {
    "int16": (16, True, 0x8000),
    "sunssf": (16, True, 0x8000),
    "uint16": (16, False, 0xFFFF),
    "count": (16, False, 0xFFFF),
    "enum16": (16, False, 0xFFFF),
    "bitfield16": (16, False, 0xFFFF),
    "acc16": (16, False, 0),
    "int32": (32, True, 0x80000000),
    "uint32": (32, False, 0xFFFFFFFF),
    "enum32": (32, False, 0xFFFFFFFF),
    "bitfield32": (32, False, 0xFFFFFFFF),
    "acc32": (32, False, 0),
    "int64": (64, True, 0x8000000000000000),
    "uint64": (64, False, 0xFFFFFFFFFFFFFFFF),
    "acc64": (64, False, 0),
}

_FLOAT32_NAN = 0x7FC00000


def _raw(registers: Sequence[int], offset: int, count: int) -> int:
    """Join ``count`` big-endian registers starting at ``offset`` into one unsigned int."""
    value = 0
    for i in range(offset, offset + count):
        value = (value << 16) | registers[i]
    return value


def _split(raw: int, count: int) -> list[int]:
    """Split an unsigned int into ``count`` big-endian registers."""
    return [(raw >> (16 * (count - 1 - i))) & 0xFFFF for i in range(count)]


def decode(type_: str, registers: Sequence[int], offset: int = 0, size: int = 1) -> Value:
    """Decode one point of ``type_`` from ``registers[offset:offset + size]``.

    Returns an ``int`` for the integer types (signed where the type is), a ``float`` for
    ``float32``, a ``str`` for ``string`` (trailing NULs removed), and ``None`` for the
    type's *not implemented* value and for ``pad``. Raises ``CodecError`` for an unknown type.
    """
    spec = _INT_TYPES.get(type_)
    if spec is not None:
        bits, signed, sentinel = spec
        raw = _raw(registers, offset, bits // 16)
        if raw == sentinel:
            return None
        if signed and raw >> (bits - 1):
            return raw - (1 << bits)
        return raw
    if type_ == "string":
        data = b"".join(r.to_bytes(2, "big") for r in registers[offset : offset + size])
        text = data.rstrip(b"\x00")
        return text.decode("utf-8", errors="replace") if text else None
    if type_ == "float32":
        raw = _raw(registers, offset, 2)
        value = float(struct.unpack(">f", raw.to_bytes(4, "big"))[0])
        return None if math.isnan(value) else value
    if type_ == "pad":
        return None
    raise CodecError(f"unknown SunSpec type {type_!r}")


Decoder = Callable[[Sequence[int], int], Value]


def decoder(type_: str, size: int = 1) -> Decoder:
    """A fast ``f(registers, offset)`` equal to ``decode(type_, registers, offset, size)``.

    For hot loops (the collector decodes every poll): the integer types get a specialised
    function without the type dispatch; other types fall back to ``decode``.
    """
    spec = _INT_TYPES.get(type_)
    if spec is None:
        return lambda registers, offset: decode(type_, registers, offset, size)
    bits, signed, sentinel = spec
    if bits == 16:
        if signed:

            def int16(registers: Sequence[int], offset: int) -> Value:
                raw = registers[offset]
                if raw == sentinel:
                    return None
                return raw - 0x10000 if raw & 0x8000 else raw

            return int16

        def uint16(registers: Sequence[int], offset: int) -> Value:
            raw = registers[offset]
            return None if raw == sentinel else raw

        return uint16
    words = bits // 16
    top = 1 << (bits - 1)

    def wide(registers: Sequence[int], offset: int) -> Value:
        raw = 0
        for i in range(offset, offset + words):
            raw = (raw << 16) | registers[i]
        if raw == sentinel:
            return None
        return raw - (top << 1) if signed and raw & top else raw

    return wide


def not_implemented(type_: str, size: int = 1) -> list[int]:
    """Registers that say *not implemented* for a point of ``type_`` (and ``size``)."""
    spec = _INT_TYPES.get(type_)
    if spec is not None:
        bits, _signed, sentinel = spec
        return _split(sentinel, bits // 16)
    if type_ == "float32":
        return _split(_FLOAT32_NAN, 2)
    if type_ in ("string", "pad"):
        return [0] * size
    raise CodecError(f"unknown SunSpec type {type_!r}")


def encode(type_: str, value: Value, size: int = 1) -> list[int]:
    """Encode ``value`` as the registers of a point of ``type_``.

    ``None`` encodes as the *not implemented* value. Raises ``CodecError`` when the value
    does not fit the type, or when it equals the sentinel (a real value that would read
    back as *not implemented*).
    """
    if value is None:
        return not_implemented(type_, size)
    spec = _INT_TYPES.get(type_)
    if spec is not None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise CodecError(f"{type_} needs an int, got {value!r}")
        bits, signed, sentinel = spec
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if not low <= value <= high:
            raise CodecError(f"{value} is out of range for {type_} [{low}, {high}]")
        raw = value & ((1 << bits) - 1)
        if raw == sentinel:
            raise CodecError(f"{value} is the not-implemented value of {type_}")
        return _split(raw, bits // 16)
    if type_ == "string":
        if not isinstance(value, str):
            raise CodecError(f"string needs a str, got {value!r}")
        data = value.encode("utf-8")
        if len(data) > 2 * size:
            raise CodecError(f"{value!r} is longer than {2 * size} bytes")
        data = data.ljust(2 * size, b"\x00")
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, 2 * size, 2)]
    if type_ == "float32":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise CodecError(f"float32 needs a number, got {value!r}")
        return _split(int.from_bytes(struct.pack(">f", float(value)), "big"), 2)
    if type_ == "pad":
        return [0] * size
    raise CodecError(f"unknown SunSpec type {type_!r}")


def apply_sf(raw: int | float | None, sf: int | None) -> float | None:
    """Scale a raw value by its scale factor: ``raw * 10**sf``.

    ``None`` when the value is not implemented, or when the point has a scale factor
    that the device does not implement (``sf is None``): without its exponent the raw
    number has no defined meaning, so the reading is treated as absent.
    """
    if raw is None or sf is None:
        return None
    if sf >= 0:
        return float(raw * 10**sf)
    return raw / 10 ** (-sf)


def unscale(value: float, sf: int) -> int:
    """Turn an engineering value into the raw integer for scale factor ``sf`` (rounded)."""
    return round(value * 10 ** (-sf)) if sf <= 0 else round(value / 10**sf)
