"""What one poll of a SunSpec inverter reads and how its registers decode (pure, no I/O).

``build_plan`` lays out a discovered device's polled points (``POLLED``) in as few reads
as fit 125 registers: ``reads[:every_poll]`` on every poll, the slow points (SoC, the
setpoint in force) every ``LOW_PRIORITY_EVERY`` polls when they need a read of their own.
``decode_reading`` (the reference, one decoder per point) and ``decode_data`` (one
``struct`` call per read, over the lean client's register bytes; tested equal) turn one
poll's registers into an ``InverterReading``. Sign: SunSpec 701 ``W`` is + for injection;
``gridflex.sunspec.sign`` turns it into ``power_w`` (+ import/charging) in ``_reading``,
the only place of the collector that does it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from collectors.modbus.fast import DeviceError, registers
from gridflex.contract import Capabilities, TelemetryStatus
from gridflex.sunspec.codec import Decoder, Value, decoder
from gridflex.sunspec.discovery import ModelMap, plan_reads
from gridflex.sunspec.sign import power_w_from_sunspec
from gridflex.sunspec.status import inverter_status
from gridflex.sunspec.tables import ModelTable

__all__ = [
    "LOW_PRIORITY_EVERY",
    "POLLED",
    "BlockLayout",
    "InverterReading",
    "PlannedPoint",
    "PollPlan",
    "build_plan",
    "decode_data",
    "decode_reading",
]

#: Slow-changing points (SoC, the setpoint in force) are read every ``LOW_PRIORITY_EVERY``
#: polls when they need a read of their own (OpenEMS' ``Priority.LOW``): SoC moves less than
#: its 0.1 % register step in a second, and the setpoint changes only when control writes it.
LOW_PRIORITY_EVERY = 5

# (reading field, model id, point name, every poll?): what a poll reads. 701 is required.
POLLED: tuple[tuple[str, int, str, bool], ...] = (
    ("status", 701, "InvSt", True),
    ("w", 701, "W", True),
    ("current_a", 701, "A", True),
    ("voltage_v", 701, "LNV", True),
    ("freq_hz", 701, "Hz", True),
    ("energy_export_wh", 701, "TotWhInj", True),
    ("energy_import_wh", 701, "TotWhAbs", True),
    ("temp_c", 701, "TmpCab", True),
    ("wset_ena", 704, "WSetEna", False),
    ("wset", 704, "WSet", False),
    ("soc_pct", 713, "SoC", False),
)


@dataclass(frozen=True, slots=True)
class PlannedPoint:
    """Where one polled value sits in the blocks a poll reads, and how to decode it.

    ``scaled`` points have a scale factor; ``sf`` is its value read at discovery (None
    when the device does not implement it, which makes the value None too).
    """

    field: str
    type: str
    block: int
    offset: int
    size: int
    sf: int | None
    scaled: bool
    symbols: dict[int, str]
    decode: Decoder

    @property
    def mul_div(self) -> tuple[int, int]:
        """``(mul, div)`` with ``value = raw * mul / div`` (equal to ``apply_sf``)."""
        if self.sf is None:
            return 1, 1
        return (10**self.sf, 1) if self.sf >= 0 else (1, 10**-self.sf)


@dataclass(frozen=True)
class PollPlan:
    """The reads of one poll and how to decode them, fixed at discovery.

    ``reads[:every_poll]`` are read on every poll; the rest (low-priority points that did
    not fit into those reads) every ``LOW_PRIORITY_EVERY`` polls.
    """

    reads: tuple[tuple[int, int], ...]
    points: tuple[PlannedPoint, ...]
    model_map: ModelMap
    capabilities: Capabilities
    every_poll: int = 0
    decoders: tuple[tuple[PlannedPoint, int, int], ...] = ()
    layouts: tuple[BlockLayout, ...] = ()
    unpacked: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.decoders:
            object.__setattr__(self, "decoders", tuple((p, *p.mul_div) for p in self.points))
        if not self.layouts:
            layouts = tuple(
                BlockLayout.build(block, self.decoders) for block in range(len(self.reads))
            )
            object.__setattr__(self, "layouts", layouts)
            unpacked = {name for layout in layouts for name, *_rest in layout.points}
            object.__setattr__(self, "unpacked", frozenset(unpacked))


#: SunSpec integer types as ``struct`` codes, with the value ``struct`` gives for the
#: type's *not implemented* marker (the table of ``gridflex.sunspec.codec``).
STRUCT_TYPES: dict[str, tuple[str, int]] = {
    "int16": ("h", -0x8000),
    "sunssf": ("h", -0x8000),
    "uint16": ("H", 0xFFFF),
    "count": ("H", 0xFFFF),
    "enum16": ("H", 0xFFFF),
    "bitfield16": ("H", 0xFFFF),
    "acc16": ("H", 0),
    "int32": ("i", -0x80000000),
    "uint32": ("I", 0xFFFFFFFF),
    "enum32": ("I", 0xFFFFFFFF),
    "bitfield32": ("I", 0xFFFFFFFF),
    "acc32": ("I", 0),
    "int64": ("q", -0x8000000000000000),
    "uint64": ("Q", 0xFFFFFFFFFFFFFFFF),
    "acc64": ("Q", 0),
}


# How ``decode_data`` turns a raw integer into its engineering value (see ``_engineering``).
_RAW, _NO_SF, _DIVIDE, _MULTIPLY, _SYMBOL = range(5)


@dataclass(frozen=True)
class BlockLayout:
    """The integer points of one read, unpacked from its register bytes in one ``struct`` call.

    ``points`` are ``(field, not-implemented value, operation, factor, symbols)`` in the
    order ``unpack`` returns them; the operation is ``_engineering``'s, picked once:
    ``value / factor`` for a negative scale factor, ``float(value * factor)`` otherwise
    (both exactly ``value * mul / div``), the enum symbol, the raw value, or None when
    the device lacks the scale factor. Points of other types (strings, floats) or that
    overlap another are left to the generic decoder.
    """

    block: int
    unpack: struct.Struct
    points: tuple[tuple[str, int, int, int, dict[int, str]], ...]

    @classmethod
    def build(cls, block: int, decoders: Sequence[tuple[PlannedPoint, int, int]]) -> BlockLayout:
        """Lay out the points of ``block`` (pure)."""
        fmt = [">"]
        points = []
        at = 0  # next register the format has not covered
        for p, mul, div in sorted(
            (d for d in decoders if d[0].block == block), key=lambda d: d[0].offset
        ):
            spec = STRUCT_TYPES.get(p.type)
            if spec is None or p.offset < at or struct.calcsize(">" + spec[0]) != 2 * p.size:
                continue
            fmt.append("x" * (2 * (p.offset - at)) + spec[0])
            if p.scaled:
                op, factor = (
                    (_NO_SF, 1)
                    if p.sf is None
                    else ((_DIVIDE, div) if div != 1 else (_MULTIPLY, mul))
                )
            else:
                op, factor = (_SYMBOL, 1) if p.symbols else (_RAW, 1)
            points.append((p.field, spec[1], op, factor, p.symbols))
            at = p.offset + p.size
        return cls(block, struct.Struct("".join(fmt)), tuple(points))


@dataclass(frozen=True, slots=True)
class InverterReading:
    """One decoded poll, in gridflex units and sign (``power_w`` + import/charging)."""

    power_w: float
    freq_hz: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    soc_pct: float | None = None
    energy_import_wh: float | None = None
    energy_export_wh: float | None = None
    temp_c: float | None = None
    setpoint_w: float | None = None
    status: TelemetryStatus | None = None
    device_status: str | None = None


def build_plan(
    model_map: ModelMap,
    tables: dict[int, ModelTable],
    scale_factors: dict[tuple[int, str], int | None],
    capabilities: Capabilities,
) -> PollPlan:
    """Plan the reads of one poll for a discovered device (pure).

    ``scale_factors`` maps ``(model id, sf point name)`` to the value read at discovery.
    Points of models the device lacks are left out. Raises ``DeviceError`` without 701.
    """
    if model_map.find(701) is None:
        raise DeviceError(f"no SunSpec model 701 (found {model_map.model_ids})")
    wanted = []
    for name, model_id, point_name, high in POLLED:
        instance = model_map.find(model_id)
        if instance is None:
            continue
        point = tables[model_id].point(point_name)
        wanted.append((name, model_id, point, instance.point_address(point.offset), high))
    reads = plan_reads((address, p.size) for _n, _m, p, address, _h in wanted)
    every_poll = len(reads)
    if len(reads) > 1:
        reads = plan_reads((a, p.size) for _n, _m, p, a, high in wanted if high)
        every_poll = len(reads)
        reads += plan_reads((a, p.size) for _n, _m, p, a, high in wanted if not high)
    points = []
    for name, model_id, point, address, _high in wanted:
        block = next(i for i, (a, c) in enumerate(reads) if a <= address < a + c)
        sf = scale_factors.get((model_id, point.sf)) if point.sf else None
        points.append(
            PlannedPoint(
                field=name,
                type=point.type,
                block=block,
                offset=address - reads[block][0],
                size=point.size,
                sf=sf,
                scaled=point.sf is not None,
                symbols=dict(point.symbols),  # SunSpec's spelling: RUNNING, ENABLED
                decode=decoder(point.type, point.size),
            )
        )
    return PollPlan(tuple(reads), tuple(points), model_map, capabilities, every_poll)


def decode_reading(plan: PollPlan, blocks: Sequence[Sequence[int]]) -> InverterReading:
    """Decode the registers of one poll into an ``InverterReading`` (pure).

    Values the device does not implement come out as None; a missing ``W`` reads as 0 W.
    The setpoint is reported only while 704 ``WSetEna`` is enabled.
    """
    raw: dict[str, Value] = {}
    for p, mul, div in plan.decoders:
        raw[p.field] = _engineering(p, mul, div, p.decode(blocks[p.block], p.offset))
    return _reading(raw)


def decode_data(plan: PollPlan, data: Sequence[bytes]) -> InverterReading:
    """``decode_reading`` over the register bytes of each read, as the lean client gives them.

    Equal to ``decode_reading(plan, [registers(d) for d in data])``; the integer points
    of each read come out of one ``struct`` call (``PollPlan.layouts``) instead of one
    decoder call per point.
    """
    raw: dict[str, Value] = {}
    for layout in plan.layouts:
        values = layout.unpack.unpack_from(data[layout.block])
        for (name, missing, op, factor, symbols), value in zip(layout.points, values, strict=True):
            if value == missing or op == _NO_SF:
                raw[name] = None
            elif op == _DIVIDE:
                raw[name] = value / factor
            elif op == _MULTIPLY:
                raw[name] = float(value * factor)
            elif op == _SYMBOL:
                raw[name] = symbols.get(value, str(value))
            else:
                raw[name] = value
    if len(raw) < len(plan.decoders):
        for p, mul, div in plan.decoders:
            if p.field not in plan.unpacked:
                value = p.decode(registers(data[p.block]), p.offset)
                raw[p.field] = _engineering(p, mul, div, value)
    return _reading(raw)


def _engineering(p: PlannedPoint, mul: int, div: int, value: Value) -> Value:
    """A decoded raw value in engineering units: scaled, or its enum symbol."""
    if value is None or isinstance(value, str):
        return value
    if p.scaled:
        return None if p.sf is None else value * mul / div
    if p.symbols:
        return p.symbols.get(int(value), str(value))
    return value


def _reading(raw: dict[str, Value]) -> InverterReading:
    """The reading from the engineering values of the polled points (gridflex sign)."""
    w = raw.get("w")
    wset = raw.get("wset")
    setpoint_w = None
    if raw.get("wset_ena") == "ENABLED" and isinstance(wset, float):
        setpoint_w = power_w_from_sunspec(wset)
    inv_st = raw.get("status")
    device_status = inv_st if isinstance(inv_st, str) else None
    power_w = power_w_from_sunspec(w) if isinstance(w, float) else 0.0
    return InverterReading(
        power_w=power_w,
        freq_hz=_float(raw.get("freq_hz")),
        voltage_v=_float(raw.get("voltage_v")),
        current_a=_float(raw.get("current_a")),
        soc_pct=_float(raw.get("soc_pct")),
        energy_import_wh=_float(raw.get("energy_import_wh")),
        energy_export_wh=_float(raw.get("energy_export_wh")),
        temp_c=_float(raw.get("temp_c")),
        setpoint_w=setpoint_w,
        status=inverter_status(device_status, power_w),
        device_status=device_status,
    )


def _float(value: Value) -> float | None:
    if type(value) is float:  # the common case: a scaled value (skips the isinstance)
        return value
    return float(value) if isinstance(value, int | float) else None
