"""A valid reading as the dataflow carries it, and its compact form between processes.

:class:`Reading` holds the fields of a :class:`~gridflex.contract.Telemetry` (same names,
same order) and when the pipeline received it. Inside a process the dataflow passes it as
it is; between the processes of a Bytewax cluster, each item of a keyed step is pickled
(twice on the way out: once to size the message, once to write it) and unpickled, and
there a plain tuple of builtins (:meth:`Reading.to_wire`) costs a tenth of a pydantic
model or a named tuple, whose class is looked up by name for every item. The steps that
exchange items (``asset_state``, ``frequency_window``, ``dispatch``, the telemetry
history) take such tuples.

:class:`ReadingLike` is what the per-asset logic reads (:func:`pipelines.assets.track`,
:func:`pipelines.validate.check_registers`): a :class:`Reading` or a ``Telemetry``.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple, Protocol

from gridflex.contract import AssetKind, EvChargingNeeds, Telemetry, TelemetryStatus

__all__ = [
    "EV_FIELDS",
    "TELEMETRY_FIELDS",
    "Reading",
    "ReadingLike",
    "WireReading",
]

#: The reading's fields in the contract's order (``schema`` left out).
TELEMETRY_FIELDS: Final = tuple(name for name in Telemetry.model_fields if name != "schema_")
#: A car's charging needs, in the contract's order.
EV_FIELDS: Final = tuple(EvChargingNeeds.model_fields)
#: Where ``ev`` sits in a reading (the last contract field; ``received_ms`` follows).
_EV: Final = len(TELEMETRY_FIELDS) - 1

#: A :class:`Reading` between processes: its values, ``ev`` as a tuple of :data:`EV_FIELDS`.
WireReading = tuple[Any, ...]


class ReadingLike(Protocol):
    """The fields of one reading the per-asset steps read."""

    @property
    def site(self) -> str: ...  # noqa: D102
    @property
    def asset(self) -> str: ...  # noqa: D102
    @property
    def kind(self) -> AssetKind: ...  # noqa: D102
    @property
    def ts_ms(self) -> int: ...  # noqa: D102
    @property
    def seq(self) -> int: ...  # noqa: D102
    @property
    def boot(self) -> str: ...  # noqa: D102
    @property
    def power_w(self) -> float: ...  # noqa: D102
    @property
    def freq_hz(self) -> float | None: ...  # noqa: D102
    @property
    def soc_pct(self) -> float | None: ...  # noqa: D102
    @property
    def energy_import_wh(self) -> float | None: ...  # noqa: D102
    @property
    def energy_export_wh(self) -> float | None: ...  # noqa: D102
    @property
    def temp_c(self) -> float | None: ...  # noqa: D102
    @property
    def setpoint_w(self) -> float | None: ...  # noqa: D102
    @property
    def status(self) -> TelemetryStatus | None: ...  # noqa: D102
    @property
    def transaction_id(self) -> str | None: ...  # noqa: D102
    @property
    def ev(self) -> EvChargingNeeds | None: ...  # noqa: D102


class Reading(NamedTuple):
    """One valid reading (the fields of ``telemetry/1``) and when the pipeline received it."""

    site: str
    asset: str
    kind: AssetKind
    ts_ms: int
    seq: int
    boot: str
    power_w: float
    freq_hz: float | None
    voltage_v: float | None
    current_a: float | None
    soc_pct: float | None
    energy_import_wh: float | None
    energy_export_wh: float | None
    temp_c: float | None
    setpoint_w: float | None
    status: TelemetryStatus | None
    device_status: str | None
    transaction_id: str | None
    ev: EvChargingNeeds | None
    received_ms: int

    @classmethod
    def of(cls, telemetry: Telemetry, received_ms: int) -> Reading:
        """The reading of a validated message."""
        values = telemetry.__dict__
        return cls._make([*(values[name] for name in TELEMETRY_FIELDS), received_ms])

    def to_wire(self) -> WireReading:
        """A plain tuple of builtins (``ev`` as a tuple too): cheap to pickle."""
        ev = self.ev
        if ev is None:
            return tuple(self)
        needs = ev.__dict__
        return (*self[:_EV], tuple(needs[name] for name in EV_FIELDS), self.received_ms)

    @classmethod
    def from_wire(cls, wire: WireReading) -> Reading:
        """The reading back from :meth:`to_wire`."""
        ev = wire[_EV]
        if ev is None:
            return cls._make(wire)
        needs = EvChargingNeeds.model_construct(**dict(zip(EV_FIELDS, ev, strict=True)))
        return cls._make((*wire[:_EV], needs, wire[_EV + 1]))

    def telemetry(self) -> Telemetry:
        """The ``telemetry/1`` payload again (not re-validated: it was valid)."""
        values: dict[str, Any] = dict(zip(TELEMETRY_FIELDS, self, strict=False))
        return Telemetry.model_construct(**values)
