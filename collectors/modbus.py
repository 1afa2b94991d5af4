"""SunSpec Modbus TCP collector: poll every inverter of a site on a fixed schedule, publish MQTT.

``gridflex collect modbus --site FILE [--modbus-client lean|pymodbus] [--mqtt-client
asyncio|thread]``. For each inverter asset one asyncio task:

1. connect (one TCP connection per device), discover the SunSpec map (``SunS`` at 40000,
   else 0, else 50000; walk the model chain), read the scale factors (static points, read
   once per discovery) and the capabilities;
2. poll every ``site.modbus.poll_interval_ms``: the n-th poll is due at ``start + n *
   interval`` (no drift; device ``i`` of ``N`` starts ``i/N`` of an interval later, so the
   fleet's requests spread over the interval). A poll that starts so late that the next
   slot has already come is counted *missed* and the schedule skips ahead;
3. each poll reads only the registers it needs, merged into as few reads as fit 125
   registers, decodes them with the cached scale factors and publishes one ``Telemetry``
   (QoS 1) with ``ts_ms`` taken when the answer arrived and a ``seq`` strictly increasing
   per asset for this ``boot``. On a 1/701/702/704/713 device that is one read of 701
   ``InvSt..TmpCab`` per poll, plus one read of 704 ``WSetEna..WSet`` with 713 every
   ``LOW_PRIORITY_EVERY`` (5) polls: SoC and the setpoint in force are slow points (OpenEMS'
   low priority), so ``soc_pct``/``setpoint_w`` are at most one second old. Where all the
   points fit one read, every poll reads them all;
4. a device that refuses the connection, times out, drops it or answers garbage is marked
   in its retained ``AssetStatus`` (``online: false``, ``offline``/``error``, reason,
   consecutive failures, ``retry_in_ms``) and retried with exponential backoff
   (``backoff_initial_s`` doubling up to ``backoff_max_s``); on its return it is
   discovered again and marked online.

The retry loop is the collector's own, not the client's reconnect: a returning device must
be re-discovered (its map or firmware may have changed) and the backoff must be visible in
its status (pymodbus' client runs with ``retries=0`` and ``reconnect_delay=0`` for that).

**The hot path** (issue 2: 1,000 inverters every 200 ms, 5,000 polls/s, from one process
on a 2-core machine). Profiled with py-spy at N = 1,000, the collector as first written
(pymodbus' async client, a coroutine step per read, a pydantic model per message, paho on
its own thread) spent ~450 us of CPU per poll and topped out near 1,900 polls/s: ~30 % of
its samples in pymodbus' request round trip, ~40 % in MQTT (paho's thread, the socketpair
wake-up per ``publish()`` and GIL hand-offs between the two threads), ~7 % in pydantic.
What the default path does instead, each measured in ``bench/poll.py`` and
``bench/README.md``:

- Modbus: ``collectors.modbus_fast.LeanModbusClient``, function 3 over an
  ``asyncio.Protocol`` (``--modbus-client pymodbus`` keeps pymodbus' client for
  discovery and polls; ``write_setpoint`` always uses pymodbus);
- the poll loop of a lean connection is a chain of callbacks (``_poll_chained``: slot ->
  request -> reply -> publish -> next slot) instead of a coroutine that sleeps and awaits
  a future per read; slots and request deadlines wait in one ``Ticker`` for the fleet,
  which also lets the polls due in the same 2 ms go out together (fewer wake-ups of the
  collector, the devices and the broker; a poll starts at most one tick late);
- decoding unpacks each read's integer points in one ``struct`` call (``decode_data``,
  tested equal to the reference ``decode_reading``), and ``TelemetryEncoder`` writes the
  contract JSON without building a pydantic model (tested byte-equal to it);
- MQTT: ``gridflex.mqtt_asyncio.AsyncMqttClient``, a native asyncio MQTT 3.1.1 client on
  the collector's loop (no network thread; one socket write per loop pass; paho cost ~35 %
  of the collector's CPU at 1,000 inverters), with an unbounded in-flight window
  (``MQTT_MAX_INFLIGHT``); ``--mqtt-client thread`` selects paho (``gridflex.mqtt``);
- the garbage collector: once every device has been tried, the start-up objects are
  frozen (``gc.freeze``): full collections walked ~200,000 of them and paused the loop
  for up to ~190 ms.

The pure part (``PollPlan``, ``decode_reading``, ``decode_data``, ``to_telemetry``,
``TelemetryEncoder``, ``PollSchedule``, ``LatenessStats``) has no I/O and is unit-tested;
``DevicePoller`` and ``run`` are the I/O. Sign: SunSpec 701 ``W`` is + for injection;
``gridflex.sunspec.sign`` turns it into ``power_w`` (+ import/charging) when a reading is
built from the decoded points (``_reading``), the only place here that does it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import struct
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse

from collectors.modbus_fast import DeviceError, LeanModbusClient, Reply, Ticker, registers
from gridflex.config import InverterAsset, SiteConfig, load_site
from gridflex.contract import (
    AssetStatus,
    Capabilities,
    CollectorStatus,
    Telemetry,
    TelemetryStatus,
    collector_topic,
    status_topic,
    telemetry_topic,
)
from gridflex.mqtt import MqttClient
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.net import raise_open_file_limit
from gridflex.runtime import stop_on_signals
from gridflex.sunspec.codec import Decoder, Value, apply_sf, decode, decoder, unscale
from gridflex.sunspec.discovery import (
    DiscoveryError,
    IllegalAddress,
    ModelMap,
    ReadRegisters,
    discover,
    plan_reads,
)
from gridflex.sunspec.sign import power_w_from_sunspec, sunspec_w_from_power_w
from gridflex.sunspec.status import inverter_status
from gridflex.sunspec.tables import ModelTable, load_model
from gridflex.telemetry_json import TelemetryJson

__all__ = [
    "DeviceError",
    "DevicePoller",
    "InverterReading",
    "LatenessStats",
    "PollPlan",
    "PollSchedule",
    "add_arguments",
    "backoff_s",
    "build_plan",
    "decode_data",
    "decode_reading",
    "main",
    "register_reader",
    "run",
    "to_telemetry",
    "write_setpoint",
]

log = logging.getLogger(__name__)

COMPONENT = "modbus"
KIND: Literal["inverter"] = "inverter"

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


# --------------------------------------------------------------------------- pure: decode


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


def to_telemetry(
    reading: InverterReading, site: str, asset: str, *, ts_ms: int, seq: int, boot: str
) -> Telemetry:
    """The contract message for one reading (validates ranges; raises ``ValidationError``)."""
    return Telemetry(
        site=site,
        asset=asset,
        kind=KIND,
        ts_ms=ts_ms,
        seq=seq,
        boot=boot,
        power_w=reading.power_w,
        freq_hz=reading.freq_hz,
        voltage_v=reading.voltage_v,
        current_a=reading.current_a,
        soc_pct=reading.soc_pct,
        energy_import_wh=reading.energy_import_wh,
        energy_export_wh=reading.energy_export_wh,
        temp_c=reading.temp_c,
        setpoint_w=reading.setpoint_w,
        status=reading.status,
        device_status=reading.device_status,
    )


class TelemetryEncoder:
    """The contract JSON of one asset's readings, built without a pydantic model (pure).

    Byte for byte what ``to_telemetry(...).to_json()`` writes for the same reading, via
    ``gridflex.telemetry_json.TelemetryJson``: validating and dumping a ``Telemetry`` model
    cost ~30 us per poll (7 % of the collector's samples at 1,000 inverters); this costs a
    few. A reading outside the contract's ranges fails with the model's
    ``ValidationError`` (a ``ValueError``); a value that is not a finite number raises
    ``ValueError``.
    """

    def __init__(self, site: str, asset: str, boot: str) -> None:
        self._json = TelemetryJson(site, asset, KIND, boot)

    def encode(self, reading: InverterReading, *, ts_ms: int, seq: int) -> bytes:
        """JSON bytes of the ``Telemetry`` for ``reading``; ``ValueError`` when invalid."""
        r = reading
        return self._json.encode(
            ts_ms=ts_ms,
            seq=seq,
            power_w=r.power_w,
            numbers=(
                r.freq_hz,
                r.voltage_v,
                r.current_a,
                r.soc_pct,
                r.energy_import_wh,
                r.energy_export_wh,
                r.temp_c,
                r.setpoint_w,
            ),
            status=r.status,
            device_status=r.device_status,
        )


# --------------------------------------------------------------------------- pure: timing


@dataclass
class PollSchedule:
    """Fixed-rate schedule: slot ``n`` is due at ``start_s + n * interval_s``.

    ``begin(now_s)`` is called when a poll starts: if ``now_s`` has reached a later slot,
    the slots in between are counted missed and skipped; it returns the lateness against
    the slot being served. ``finish()`` moves to the next slot.
    """

    start_s: float
    interval_s: float
    slot: int = 0
    missed: int = 0

    def due_s(self) -> float:
        """When the current slot is due."""
        return self.start_s + self.slot * self.interval_s

    def begin(self, now_s: float) -> float:
        """Serve the latest due slot at ``now_s``; returns lateness in seconds (>= 0)."""
        latest = math.floor((now_s - self.start_s) / self.interval_s + 1e-9)
        if latest > self.slot:
            self.missed += latest - self.slot
            self.slot = latest
        return max(0.0, now_s - self.due_s())

    def finish(self) -> None:
        """The current slot was served; the next one is due one interval later."""
        self.slot += 1

    def resume(self, now_s: float) -> None:
        """After an outage: continue at the first slot not before ``now_s`` (none missed)."""
        self.slot = max(self.slot, math.ceil((now_s - self.start_s) / self.interval_s - 1e-9))


@dataclass
class LatenessStats:
    """Histogram of poll lateness (0.1 ms buckets up to 1 s, then one overflow bucket)."""

    bucket_ms: float = 0.1
    buckets: int = 10_000
    counts: list[int] = field(default_factory=list)
    polls: int = 0
    max_ms: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (self.buckets + 1)

    def record(self, lateness_s: float) -> None:
        """Count one poll that started ``lateness_s`` after its due time."""
        ms = lateness_s * 1000.0
        self.counts[min(int(ms / self.bucket_ms), self.buckets)] += 1
        self.polls += 1
        self.max_ms = max(self.max_ms, ms)

    def percentile_ms(self, q: float) -> float | None:
        """Upper edge of the bucket holding the ``q`` quantile (0..1); None if empty."""
        if self.polls == 0:
            return None
        rank = math.ceil(q * self.polls)
        seen = 0
        for i, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return (i + 1) * self.bucket_ms if i < self.buckets else self.max_ms
        return self.max_ms


def backoff_s(failures: int, initial_s: float, max_s: float) -> float:
    """Retry delay after ``failures`` consecutive failures: doubling from ``initial_s``."""
    return min(initial_s * 2 ** max(failures - 1, 0), max_s)


# --------------------------------------------------------------------------- I/O


class Publisher(Protocol):
    """What the collector needs of an MQTT client (``gridflex.mqtt.MqttClient`` fits)."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue one message."""
        ...


@dataclass
class CollectorStats:
    """Counters of one collector run (one asyncio loop, no locking needed)."""

    lateness: LatenessStats = field(default_factory=LatenessStats)
    missed: int = 0
    published: int = 0
    failures: int = 0
    invalid: int = 0
    counting: bool = True
    window_s: float = 0.0  # length of the counting window (set when the run ends)


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


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def register_reader(client: AsyncModbusTcpClient, unit_id: int) -> ReadRegisters:
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


async def write_setpoint(
    client: AsyncModbusTcpClient, model_map: ModelMap, power_w: float, unit_id: int = 1
) -> float:
    """Write an absolute active-power setpoint (gridflex sign) to 704; idempotent.

    One function-16 write sets ``WSetEna`` = enabled, ``WSetMod`` = watts and ``WSet``
    (converted to SunSpec's + injection and scaled by ``WSet_SF``), so a repeated call
    changes nothing. Returns the value written in watts after scaling (gridflex sign).
    Raises ``DeviceError`` when the device lacks 704 or refuses the write.
    """
    instance = model_map.find(704)
    if instance is None:
        raise DeviceError("device has no SunSpec model 704 (DER AC controls)")
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


class DevicePoller:
    """Poll one inverter forever: discover, poll on schedule, back off on failure."""

    def __init__(
        self,
        site: SiteConfig,
        asset: InverterAsset,
        mqtt: Publisher,
        stats: CollectorStats,
        *,
        boot: str,
        phase_s: float = 0.0,
        modbus_client: ModbusClientKind = "lean",
        ticker: Ticker | None = None,
    ) -> None:
        self.site = site
        self.asset = asset
        self.mqtt = mqtt
        self.stats = stats
        self.boot = boot
        self.phase_s = phase_s
        self.modbus_client: ModbusClientKind = modbus_client
        self.ticker = ticker
        self.seq = 0
        self.failures = 0
        self.online = False
        self._telemetry_topic = telemetry_topic(site.id, KIND, asset.id)
        self._status_topic = status_topic(site.id, KIND, asset.id)
        self._encoder = TelemetryEncoder(site.id, asset.id, boot)
        self._invalid_logged = False
        self._polls = 0
        self.stopping = False
        #: Set once the first connect-and-discover attempt has ended (either way).
        self.tried = asyncio.Event()

    def publish_status(
        self,
        state: Literal["online", "offline", "error"],
        reason: str | None = None,
        retry_in_ms: int | None = None,
        capabilities: Capabilities | None = None,
    ) -> None:
        """Publish this asset's retained status."""
        self.online = state == "online"
        status = AssetStatus(
            site=self.site.id,
            asset=self.asset.id,
            kind=KIND,
            ts_ms=_now_ms(),
            boot=self.boot,
            online=self.online,
            state=state,
            reason=reason,
            consecutive_failures=self.failures,
            retry_in_ms=retry_in_ms,
            capabilities=capabilities,
        )
        self.mqtt.publish(self._status_topic, status.to_json(), qos=1, retain=True)

    async def run(self) -> None:
        """Connect, discover and poll; on failure report and retry with backoff."""
        cfg = self.site.modbus
        loop = asyncio.get_running_loop()
        schedule = PollSchedule(loop.time() + self.phase_s, cfg.poll_interval_ms / 1000.0)
        while not self.stopping:
            delay_s = cfg.backoff_initial_s
            client = modbus_connection(
                self.modbus_client,
                self.asset.host,
                self.asset.port,
                timeout_s=cfg.timeout_s,
                ticker=self.ticker,
            )
            try:
                await client.connect()
                read = client.reader(self.asset.unit_id)
                plan = await discover_plan(
                    read,
                    site_max_charge_w=self.asset.max_charge_w,
                    site_max_discharge_w=self.asset.max_discharge_w,
                )
                self.tried.set()
                self.failures = 0
                self.publish_status("online", capabilities=plan.capabilities)
                log.info("%s: online, models %s", self.asset.id, plan.model_map.model_ids)
                schedule.resume(loop.time())
                if isinstance(client, LeanModbusClient):
                    await self._poll_chained(client, plan, schedule)
                else:
                    await self._poll(read, plan, schedule)
            except (ModbusException, DeviceError, DiscoveryError, IllegalAddress, OSError) as exc:
                self.tried.set()
                self.failures += 1
                self.stats.failures += 1
                garbage = isinstance(exc, DeviceError | DiscoveryError | IllegalAddress)
                delay_s = backoff_s(self.failures, cfg.backoff_initial_s, cfg.backoff_max_s)
                reason = f"{type(exc).__name__}: {exc}"[:200]
                if self.failures == 1:
                    log.warning("%s: %s; retry in %.1f s", self.asset.id, reason, delay_s)
                self.publish_status(
                    "error" if garbage else "offline", reason, retry_in_ms=round(delay_s * 1000)
                )
            finally:
                client.close()
            await asyncio.sleep(delay_s)

    def _begin_poll(self, plan: PollPlan, schedule: PollSchedule, now_s: float) -> int:
        """Start the poll due now: count lateness and missed slots; return how many reads."""
        missed_before = schedule.missed
        lateness_s = schedule.begin(now_s)
        stats = self.stats
        if stats.counting:
            stats.lateness.record(lateness_s)
            stats.missed += schedule.missed - missed_before
        self._polls += 1
        if self._polls % LOW_PRIORITY_EVERY == 1:
            return len(plan.reads)
        return plan.every_poll

    def _publish_reading(self, reading: InverterReading) -> None:
        """Publish one reading as telemetry, timestamped now (its answer just arrived)."""
        ts_ms = _now_ms()
        self.seq += 1
        stats = self.stats
        try:
            payload = self._encoder.encode(reading, ts_ms=ts_ms, seq=self.seq)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            stats.invalid += 1
            if not self._invalid_logged:
                self._invalid_logged = True
                log.warning(
                    "%s: reading outside the contract, not published: %s", self.asset.id, exc
                )
            return
        self.mqtt.publish(self._telemetry_topic, payload, 1)
        stats.published += 1

    async def _poll(self, read: ReadRegisters, plan: PollPlan, schedule: PollSchedule) -> None:
        """Poll on schedule with any ``ReadRegisters`` (one coroutine step per read)."""
        loop = asyncio.get_running_loop()
        blocks: list[Sequence[int]] = [()] * len(plan.reads)
        self._polls = 0
        while not self.stopping:
            delay = schedule.due_s() - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            last = self._begin_poll(plan, schedule, loop.time())
            for i in range(last):
                blocks[i] = await read(*plan.reads[i])
            schedule.finish()
            self._publish_reading(decode_reading(plan, blocks))

    async def _poll_chained(
        self, client: LeanModbusClient, plan: PollPlan, schedule: PollSchedule
    ) -> None:
        """Poll on schedule as a chain of callbacks: slot, request, reply, publish, slot.

        The same schedule and messages as ``_poll`` without a task wake-up, a future and
        a sleep per poll: slots wait in the fleet's ``Ticker``, replies arrive as register
        bytes straight from the protocol and are decoded by ``decode_data`` (the hot path
        of the lean client). Returns when stopping; raises what a read failed with.
        """
        loop = asyncio.get_running_loop()
        ticker = self.ticker or Ticker(loop)
        done: asyncio.Future[None] = loop.create_future()
        reads, unit_id = plan.reads, self.asset.unit_id
        data: list[bytes] = [b""] * len(reads)
        last = index = 0
        self._polls = 0

        def start() -> None:
            nonlocal last, index
            if done.done():  # a slot left over from a loop that has ended
                return
            if self.stopping:
                done.set_result(None)
                return
            last = self._begin_poll(plan, schedule, loop.time())
            index = 0
            client.request(*reads[0], unit_id, on_reply)

        def on_reply(reply: Reply) -> None:
            nonlocal index
            if done.done():  # stopped or failed meanwhile
                return
            if isinstance(reply, Exception):
                done.set_exception(reply)
                return
            data[index] = reply
            index += 1
            if index < last:
                client.request(*reads[index], unit_id, on_reply)
                return
            schedule.finish()
            try:
                self._publish_reading(decode_data(plan, data))
            except Exception as exc:  # a bug must end the poll loop visibly, not silently
                done.set_exception(exc)
                return
            ticker.call_at(schedule.due_s(), start)

        ticker.call_at(schedule.due_s(), start)
        try:
            await done
        finally:
            if ticker is not self.ticker:
                ticker.close()


def collector_status(site: SiteConfig, boot: str, *, online: bool) -> CollectorStatus:
    """Return the collector's retained presence (its last will with ``online=False``)."""
    return CollectorStatus(
        site=site.id,
        component=COMPONENT,
        ts_ms=_now_ms(),
        online=online,
        boot=boot,
        assets=[a.id for a in site.inverters],
    )


async def _stop_pollers(pollers: list[DevicePoller], tasks: list[asyncio.Task[None]]) -> None:
    """Stop every poller task.

    Python 3.11's ``asyncio.wait_for`` (used inside pymodbus) can swallow a cancellation
    that races with a reply, so each poller also checks its ``stopping`` flag and the
    cancellation is repeated until every task has ended.
    """
    for poller in pollers:
        poller.stopping = True
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=0.5)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("poller %s ended with %r", task.get_name(), task.exception())


async def _when_tried(pollers: list[DevicePoller], callback: Callable[[], object]) -> None:
    """Call ``callback`` once every poller has tried its first discovery."""
    for poller in pollers:
        await poller.tried.wait()
    callback()


async def run(
    site: SiteConfig,
    mqtt: Publisher,
    stop: asyncio.Event,
    *,
    boot: str | None = None,
    stats: CollectorStats | None = None,
    warmup_s: float = 0.0,
    modbus_client: ModbusClientKind = "lean",
    on_discovered: Callable[[], object] | None = None,
) -> CollectorStats:
    """Poll every inverter of ``site`` until ``stop`` is set; publish statuses on the way out.

    The caller owns the MQTT client (connect before, flush and stop after).
    ``modbus_client`` picks the Modbus TCP client for discovery and polls (see
    ``modbus_connection``); ``on_discovered`` is called once every device has been tried
    once (discovered, or failed and waiting for its retry).
    """
    boot = boot or uuid.uuid4().hex[:12]
    stats = stats or CollectorStats()
    interval_s = site.modbus.poll_interval_ms / 1000.0
    inverters = site.inverters
    topic = collector_topic(site.id, COMPONENT)
    mqtt.publish(topic, collector_status(site, boot, online=True).to_json(), qos=1, retain=True)
    ticker = Ticker(asyncio.get_running_loop())
    pollers = [
        DevicePoller(
            site,
            asset,
            mqtt,
            stats,
            boot=boot,
            phase_s=interval_s * i / len(inverters),
            modbus_client=modbus_client,
            ticker=ticker,
        )
        for i, asset in enumerate(inverters)
    ]
    tasks = [asyncio.create_task(p.run(), name=f"poll-{p.asset.id}") for p in pollers]
    watcher = None
    if on_discovered is not None:
        watcher = asyncio.create_task(_when_tried(pollers, on_discovered), name="discovered")
    if warmup_s > 0:
        stats.counting = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), warmup_s)
        stats.lateness = LatenessStats()
        stats.missed = 0
        stats.counting = True
    window_start = asyncio.get_running_loop().time()
    await stop.wait()
    stats.window_s = asyncio.get_running_loop().time() - window_start
    if watcher is not None:
        watcher.cancel()
    await _stop_pollers(pollers, tasks)
    ticker.close()
    for poller in pollers:
        poller.publish_status("offline", "collector stopped")
    mqtt.publish(topic, collector_status(site, boot, online=False).to_json(), qos=1, retain=True)
    return stats


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gridflex collect modbus``."""
    parser.add_argument("--site", type=Path, required=True, help="site file (TOML)")
    parser.add_argument(
        "--modbus-client",
        choices=MODBUS_CLIENTS,
        default="lean",
        help="Modbus TCP client for discovery and polls: lean (default, the fast function-3 "
        "client of collectors.modbus_fast) or pymodbus (its full async client)",
    )
    parser.add_argument(
        "--mqtt-client",
        choices=("asyncio", "thread"),
        default="asyncio",
        help="MQTT client: asyncio (default, the native asyncio client of "
        "gridflex.mqtt_asyncio on the collector's event loop) or thread (paho on its own "
        "network thread, gridflex.mqtt)",
    )
    parser.add_argument("--stats-file", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stats-warmup-s", type=float, default=0.0, help=argparse.SUPPRESS)


def stats_summary(stats: CollectorStats) -> dict[str, float | int | None]:
    """The collector's own timing statistics, as logged and written by ``--stats-file``."""
    return {
        "polls": stats.lateness.polls,
        "missed": stats.missed,
        "published": stats.published,
        "failures": stats.failures,
        "invalid": stats.invalid,
        "elapsed_s": round(stats.window_s, 3),
        "lateness_p50_ms": stats.lateness.percentile_ms(0.50),
        "lateness_p99_ms": stats.lateness.percentile_ms(0.99),
        "lateness_max_ms": round(stats.lateness.max_ms, 3),
    }


_BROKER_NOT_YET = "MQTT broker %s not reachable yet; messages queue until it is"

#: paho's in-flight window for telemetry: 0 = unbounded. With a window, paho scans its
#: in-flight messages on every PUBACK, and a window of 100 stalled the collector's 5,000
#: messages a second behind a busy loop; memory stays bounded by ``mqtt.queue_limit``.
MQTT_MAX_INFLIGHT = 0


def _freeze_gc() -> None:
    """Move what start-up built (plans, tables, clients) out of the garbage collector's way.

    At 1,000 inverters a full collection walked ~200,000 start-up objects and paused the
    loop for up to ~190 ms, several times a minute; frozen, the longest was ~25 ms.
    """
    gc.freeze()
    log.info("all devices tried; %d start-up objects frozen for the GC", gc.get_freeze_count())


def main(args: argparse.Namespace) -> int:
    """Run ``gridflex collect modbus`` until SIGINT/SIGTERM; 0 after a clean shutdown."""
    site = load_site(args.site)
    if not site.inverters:
        log.error("%s has no inverter assets to poll", site.source or args.site)
        return 2
    raise_open_file_limit()
    boot = uuid.uuid4().hex[:12]
    will = collector_status(site, boot, online=False)
    mqtt_class = AsyncMqttClient if args.mqtt_client == "asyncio" else MqttClient
    mqtt = mqtt_class(
        site.mqtt.url,
        f"gridflex-collect-modbus-{site.id}",
        username=site.mqtt.username,
        password=site.mqtt.password,
        will=(collector_topic(site.id, COMPONENT), will.to_json()),
        queue_limit=site.mqtt.queue_limit,
        keepalive_s=site.mqtt.keepalive_s,
        max_inflight=MQTT_MAX_INFLIGHT,
    )
    modbus_client: ModbusClientKind = args.modbus_client
    log.info(
        "polling %d inverters every %d ms with the %s Modbus client (boot %s)",
        len(site.inverters),
        site.modbus.poll_interval_ms,
        modbus_client,
        boot,
    )

    async def _run(mqtt: Publisher, stop: asyncio.Event) -> CollectorStats:
        return await run(
            site,
            mqtt,
            stop,
            boot=boot,
            warmup_s=args.stats_warmup_s,
            modbus_client=modbus_client,
            on_discovered=_freeze_gc,
        )

    async def _with_asyncio_mqtt(client: AsyncMqttClient) -> CollectorStats:
        stop = stop_on_signals()
        await client.start()
        if not await client.wait_connected(10.0):
            log.warning(_BROKER_NOT_YET, site.mqtt.url)
        try:
            return await _run(client, stop)
        finally:
            await client.stop(flush_timeout_s=5.0)

    async def _with_thread_mqtt(client: MqttClient) -> CollectorStats:
        return await _run(client, stop_on_signals())

    if isinstance(mqtt, AsyncMqttClient):
        stats = asyncio.run(_with_asyncio_mqtt(mqtt))
    else:
        mqtt.start()
        if not mqtt.wait_connected(10.0):
            log.warning(_BROKER_NOT_YET, site.mqtt.url)
        try:
            stats = asyncio.run(_with_thread_mqtt(mqtt))
        finally:
            mqtt.stop(flush_timeout_s=5.0)
    summary = stats_summary(stats)
    log.info("modbus collector stopped: %s", json.dumps(summary))
    if args.stats_file is not None:
        args.stats_file.write_text(json.dumps(summary) + "\n", encoding="utf-8")
    return 0
