"""Find a SunSpec device's models and plan the register reads that cover a set of points.

The transport is injected: ``discover`` takes an async ``read(address, count)`` that
returns the holding registers, so the walk is tested with a fake and used over Modbus TCP
by the collector. A device marks its map with ``SunS`` (0x5375 0x6E53) at 40000, else 0,
else 50000; models follow back to back as ``ID, L, <L registers>``; ``0xFFFF, 0`` ends it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "BASE_ADDRESSES",
    "END_MODEL_ID",
    "MAX_READ_REGISTERS",
    "SUNS_MARKER",
    "DiscoveryError",
    "IllegalAddress",
    "ModelInstance",
    "ModelMap",
    "ReadRegisters",
    "discover",
    "plan_reads",
]

SUNS_MARKER: tuple[int, int] = (0x5375, 0x6E53)
BASE_ADDRESSES: tuple[int, ...] = (40000, 0, 50000)
END_MODEL_ID = 0xFFFF
#: Most holding registers one Modbus read (function 3) may return.
MAX_READ_REGISTERS = 125
_MAX_MODELS = 64

ReadRegisters = Callable[[int, int], Awaitable[Sequence[int]]]


class DiscoveryError(RuntimeError):
    """The device has no usable SunSpec map."""


class IllegalAddress(Exception):
    """The device answered a read with Modbus exception 2 (illegal data address)."""


@dataclass(frozen=True, slots=True)
class ModelInstance:
    """One model found on a device: its id, the address of its ``ID`` register and ``L``."""

    model_id: int
    address: int
    length: int

    def point_address(self, offset: int) -> int:
        """Modbus address of the register at ``offset`` from the model's ``ID``."""
        return self.address + offset


@dataclass(frozen=True)
class ModelMap:
    """The models of one device, in the order the device lists them."""

    base: int
    models: tuple[ModelInstance, ...]

    def find(self, model_id: int) -> ModelInstance | None:
        """The first instance of ``model_id``, or None when the device lacks it."""
        for model in self.models:
            if model.model_id == model_id:
                return model
        return None

    @property
    def model_ids(self) -> list[int]:
        """Model ids in device order."""
        return [m.model_id for m in self.models]


async def discover(
    read: ReadRegisters, bases: Iterable[int] = BASE_ADDRESSES, max_models: int = _MAX_MODELS
) -> ModelMap:
    """Find the ``SunS`` marker and walk the model chain.

    A base whose read fails with ``IllegalAddress`` or lacks the marker is skipped; other
    errors of ``read`` (timeouts, a lost connection) propagate to the caller. Raises
    ``DiscoveryError`` when no base has the marker or the chain is malformed.
    """
    for base in bases:
        try:
            marker = tuple(await read(base, 2))
        except IllegalAddress:
            continue
        if marker != SUNS_MARKER:
            continue
        models: list[ModelInstance] = []
        address = base + 2
        while True:
            try:
                header = await read(address, 2)
            except IllegalAddress:
                raise DiscoveryError(
                    f"model chain at {base} runs past the device's registers at {address}"
                ) from None
            model_id, length = int(header[0]), int(header[1])
            if model_id == END_MODEL_ID:
                return ModelMap(base=base, models=tuple(models))
            if len(models) >= max_models:
                raise DiscoveryError(f"more than {max_models} models at {base}: no end marker")
            models.append(ModelInstance(model_id=model_id, address=address, length=length))
            address += 2 + length
            if address > 0xFFFF:
                raise DiscoveryError(f"model chain at {base} runs past register 65535")
    raise DiscoveryError("no SunSpec marker 'SunS' at " + ", ".join(map(str, bases)))


def plan_reads(
    spans: Iterable[tuple[int, int]], max_count: int = MAX_READ_REGISTERS
) -> list[tuple[int, int]]:
    """Merge ``(address, count)`` spans into as few reads as possible.

    Spans are sorted and merged while the merged read stays within ``max_count``
    registers (reading a gap costs less than another round trip). Returns
    ``(address, count)`` reads covering every span.
    """
    reads: list[tuple[int, int]] = []
    for address, count in sorted(spans):
        if count > max_count:
            raise ValueError(f"span at {address} of {count} registers exceeds {max_count}")
        if reads:
            start, length = reads[-1]
            end = max(start + length, address + count)
            if end - start <= max_count:
                reads[-1] = (start, end - start)
                continue
        reads.append((address, count))
    return reads
