"""The MQTT contract, version 1: topics and payload models.

Every message gridflex publishes is one of the models below, serialised as a JSON object
whose ``schema`` field names the model and its version (``"telemetry/1"``). The JSON Schema
documents in ``docs/schemas/`` and the AsyncAPI document ``docs/asyncapi.yaml`` are generated
from these models (``gridflex contract export``); a test keeps them in step.

Sign convention, written once: ``power_w`` is + for import/charging and - for
export/discharge. Timestamps on the wire are UTC epoch milliseconds.
"""

from __future__ import annotations

import base64
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "ACK_RESULTS",
    "ASSET_ID_PATTERN",
    "DEAD_LETTER_LIMIT",
    "PREFIX",
    "TELEMETRY_STATUSES",
    "AckResult",
    "AssetKind",
    "AssetStatus",
    "Capabilities",
    "CollectorStatus",
    "ContractError",
    "CsmsRequest",
    "CsmsRequestKind",
    "CsmsResult",
    "CsmsStatus",
    "DeadLetter",
    "DispatchAck",
    "DispatchCommand",
    "DispatchMode",
    "EvChargingNeeds",
    "Forecast",
    "FreqWattPoint",
    "GridFrequency",
    "SiteSummary",
    "Telemetry",
    "TelemetryStatus",
    "ack_topic",
    "collector_topic",
    "command_topic",
    "csms_request_topic",
    "csms_result_topic",
    "deadletter_topic",
    "forecast_topic",
    "grid_frequency_topic",
    "is_retained_topic",
    "parse_topic",
    "status_topic",
    "summary_topic",
    "telemetry_topic",
]

PREFIX = "gridflex/v1"
ASSET_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ASSET_ID_RE = re.compile(ASSET_ID_PATTERN)

AssetKind = Literal["inverter", "evse"]
AssetId = Annotated[str, Field(pattern=ASSET_ID_PATTERN)]
SiteId = Annotated[str, Field(pattern=ASSET_ID_PATTERN)]
EpochMs = Annotated[int, Field(ge=0, description="UTC epoch milliseconds")]


class ContractError(ValueError):
    """A topic or payload that does not follow the contract."""


def _check_id(value: str, what: str) -> str:
    if not _ASSET_ID_RE.match(value):
        raise ContractError(f"{what} {value!r:.80} does not match {ASSET_ID_PATTERN}")
    return value


# --------------------------------------------------------------------------- topics


def telemetry_topic(site: str, kind: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/{kind}/{asset}/telemetry``."""
    return f"{PREFIX}/{_check_id(site, 'site')}/{kind}/{_check_id(asset, 'asset')}/telemetry"


def status_topic(site: str, kind: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/{kind}/{asset}/status`` (retained)."""
    return f"{PREFIX}/{_check_id(site, 'site')}/{kind}/{_check_id(asset, 'asset')}/status"


def grid_frequency_topic(site: str) -> str:
    """Return ``gridflex/v1/{site}/grid/frequency``."""
    return f"{PREFIX}/{_check_id(site, 'site')}/grid/frequency"


def forecast_topic(site: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/ev/{asset}/forecast``."""
    return f"{PREFIX}/{_check_id(site, 'site')}/ev/{_check_id(asset, 'asset')}/forecast"


def command_topic(site: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/dispatch/{asset}/command``."""
    return f"{PREFIX}/{_check_id(site, 'site')}/dispatch/{_check_id(asset, 'asset')}/command"


def ack_topic(site: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/dispatch/{asset}/ack``."""
    return f"{PREFIX}/{_check_id(site, 'site')}/dispatch/{_check_id(asset, 'asset')}/ack"


def csms_request_topic(site: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/csms/{asset}/setpoint``: control asks the CSMS (internal)."""
    return f"{PREFIX}/{_check_id(site, 'site')}/csms/{_check_id(asset, 'asset')}/setpoint"


def csms_result_topic(site: str, asset: str) -> str:
    """Return ``gridflex/v1/{site}/csms/{asset}/result``: the CSMS answers control (internal)."""
    return f"{PREFIX}/{_check_id(site, 'site')}/csms/{_check_id(asset, 'asset')}/result"


def summary_topic(site: str) -> str:
    """Return ``gridflex/v1/{site}/summary`` (retained)."""
    return f"{PREFIX}/{_check_id(site, 'site')}/summary"


def collector_topic(site: str, component: str) -> str:
    """Return ``gridflex/v1/{site}/collector/{component}/status`` (retained, last will).

    MQTT allows one last will per connection, so a collector's death is announced here, once
    for all its assets; a consumer treats the asset statuses of an offline collector as stale.
    """
    component = _check_id(component, "component")
    return f"{PREFIX}/{_check_id(site, 'site')}/collector/{component}/status"


def deadletter_topic(component: str) -> str:
    """Return ``gridflex/v1/deadletter/{component}``."""
    return f"{PREFIX}/deadletter/{_check_id(component, 'component')}"


def is_retained_topic(topic: str) -> bool:
    """Whether the contract publishes ``topic`` retained (statuses and the site summary)."""
    return topic.endswith(("/status", "/summary")) and topic.startswith(PREFIX + "/")


def parse_topic(topic: str) -> dict[str, str]:
    """Split a contract topic into its parts.

    Returns a dict with ``site``, ``kind`` (``inverter``/``evse``/``grid``/``ev``/
    ``dispatch``/``summary``/``deadletter``), ``asset`` where the topic has one, and
    ``leaf`` (``telemetry``, ``status``, ``frequency``, ...). Raises ``ContractError`` for a
    topic outside the tree.
    """
    parts = topic.split("/")
    if len(parts) < 3 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise ContractError(f"topic {topic!r:.200} is not under {PREFIX}/")
    rest = parts[2:]
    if rest[0] == "deadletter" and len(rest) == 2:
        return {"kind": "deadletter", "component": rest[1], "leaf": "deadletter"}
    if len(rest) == 2 and rest[1] == "summary":
        return {"site": rest[0], "kind": "summary", "leaf": "summary"}
    if len(rest) == 3 and rest[1:] == ["grid", "frequency"]:
        return {"site": rest[0], "kind": "grid", "leaf": "frequency"}
    if len(rest) == 4:
        site, kind, asset, leaf = rest
        known = {
            "inverter": {"telemetry", "status"},
            "evse": {"telemetry", "status"},
            "ev": {"forecast"},
            "dispatch": {"command", "ack"},
            "csms": {"setpoint", "result"},
            "collector": {"status"},
        }
        if leaf in known.get(kind, set()) and _ASSET_ID_RE.match(asset):
            return {"site": site, "kind": kind, "asset": asset, "leaf": leaf}
    raise ContractError(f"topic {topic!r:.200} is not in the gridflex/v1 topic tree")


# --------------------------------------------------------------------------- payloads


class _Payload(BaseModel):
    """Base for every payload: strict field names, no extras accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> bytes:
        """Serialise to compact JSON bytes, leaving out fields that are ``None``."""
        return self.model_dump_json(exclude_none=True).encode()


class EvChargingNeeds(BaseModel):
    """What the car told the charger it needs (OCPP NotifyEVChargingNeeds / ISO 15118)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    departure_ms: EpochMs | None = None
    requested_energy_wh: Annotated[float, Field(ge=0)] | None = None
    max_charge_w: Annotated[float, Field(ge=0)] | None = None
    max_discharge_w: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="discharge power the car allows, as a positive number"
    )
    min_soc_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    target_soc_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    v2x: bool = Field(default=False, description="the car can discharge (ISO 15118-20 V2X)")
    energy_transfer_mode: str | None = None


TelemetryStatus = Literal["idle", "charging", "discharging", "suspended", "fault", "unavailable"]
"""What an asset is doing, in one vocabulary for inverters and EVSEs (``telemetry.status``).

=================  ========================================================================
status             meaning
=================  ========================================================================
``idle``           ready, no energy exchanged (no car, car connected without energy
                   transfer, transaction ended, inverter sleeping/starting/standby or
                   running at 0 W)
``charging``       energy flows into the battery or car (``power_w`` >= 0 for an EVSE in a
                   transaction, > 0 for an inverter)
``discharging``    energy flows out to the grid (``power_w`` < 0)
``suspended``      a transaction is running but paused by the car or the station
``fault``          the device reports a fault
``unavailable``    switched off, shutting down or out of service
=================  ========================================================================

The device's own word is kept in ``device_status``. From OCPP 2.0.1/2.1 (first match wins;
``collectors.ocpp.mapping.telemetry_status``):

====================================================  ================
connector status / charging state / event              status
====================================================  ================
connector ``Faulted``, or an active fault code         ``fault``
connector ``Unavailable``                              ``unavailable``
TransactionEvent ``Ended`` (device_status ``Ended``)   ``idle``
``Charging``, ``power_w`` < 0 (V2X)                    ``discharging``
``Charging``                                           ``charging``
``SuspendedEV``, ``SuspendedEVSE``                     ``suspended``
``EVConnected``, ``Idle``                              ``idle``
connector ``Available``, ``Occupied``, ``Reserved``    ``idle``
====================================================  ================

From SunSpec 701 ``InvSt`` (``gridflex.sunspec.status.inverter_status``):

=======================================  ================================================
InvSt                                    status
=======================================  ================================================
``RUNNING``, ``THROTTLED``               ``charging`` (``power_w`` > 0), ``discharging``
                                         (< 0), ``idle`` (0)
``SLEEPING``, ``STARTING``, ``STANDBY``  ``idle``
``FAULT``                                ``fault``
``OFF``, ``SHUTTING_DOWN``               ``unavailable``
=======================================  ================================================
"""

#: The values of ``TelemetryStatus``.
TELEMETRY_STATUSES: frozenset[str] = frozenset(get_args(TelemetryStatus))


class Telemetry(_Payload):
    """One reading of one asset, taken at ``ts_ms``."""

    schema_: Literal["telemetry/1"] = Field(default="telemetry/1", alias="schema")
    site: SiteId
    asset: AssetId
    kind: AssetKind
    ts_ms: EpochMs
    seq: Annotated[int, Field(ge=0, description="strictly increasing per asset and boot")]
    boot: Annotated[str, Field(min_length=1, max_length=64, description="collector run id")]
    power_w: float = Field(description="+ import/charging, - export/discharge")
    freq_hz: Annotated[float, Field(gt=0, lt=100)] | None = None
    voltage_v: Annotated[float, Field(ge=0)] | None = None
    current_a: float | None = None
    soc_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    energy_import_wh: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="cumulative meter register, energy taken from the grid"
    )
    energy_export_wh: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="cumulative meter register, energy given to the grid"
    )
    temp_c: float | None = None
    setpoint_w: float | None = Field(default=None, description="active power setpoint in force")
    status: TelemetryStatus | None = Field(
        default=None,
        description="what the asset is doing, one vocabulary for every kind: idle, charging, "
        "discharging, suspended, fault, unavailable (docs/mqtt.md has the mapping tables)",
    )
    device_status: str | None = Field(
        default=None,
        description="the device's own word for its state: OCPP charging state or connector "
        "status ('SuspendedEV', 'Ended', ...), SunSpec 701 InvSt ('RUNNING', 'STANDBY', ...)",
    )
    transaction_id: str | None = None
    ev: EvChargingNeeds | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


class Capabilities(BaseModel):
    """What an asset can do: what the device says (``rated_*``) and what the site allows.

    ``rated_charge_w``/``rated_discharge_w`` come from the device itself: SunSpec 702
    ``WChaRteMaxRtg``/``WDisChaRteMaxRtg`` for an inverter; for an OCPP EVSE what the car
    states in its charging needs (absent when nothing was stated). ``site_max_charge_w``/
    ``site_max_discharge_w`` are the asset's limits from the site file (``assets[]
    .max_charge_w``/``max_discharge_w``). The control writer clamps to the smaller of both.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: str = Field(description="'sunspec' or 'ocpp2.0.1' / 'ocpp2.1'")
    models: list[int] = Field(default_factory=list, description="SunSpec models found")
    rated_charge_w: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="charge power the device (or the car) states it can take"
    )
    rated_discharge_w: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="discharge power the device (or the car) states, positive"
    )
    site_max_charge_w: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="the asset's charge limit in the site file"
    )
    site_max_discharge_w: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="the asset's discharge limit in the site file, positive"
    )
    capacity_wh: Annotated[float, Field(ge=0)] | None = None
    v2x: bool = False
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    firmware: str | None = None


class AssetStatus(_Payload):
    """Retained status of one asset; the collector's last will sets ``online: false``."""

    schema_: Literal["status/1"] = Field(default="status/1", alias="schema")
    site: SiteId
    asset: AssetId
    kind: AssetKind
    ts_ms: EpochMs
    seq: Annotated[int, Field(ge=0)] | None = None
    boot: str | None = None
    online: bool
    state: Literal["online", "offline", "error", "faulted", "unknown"]
    reason: str | None = None
    faults: list[str] = Field(default_factory=list)
    consecutive_failures: Annotated[int, Field(ge=0)] = 0
    retry_in_ms: Annotated[int, Field(ge=0)] | None = None
    transaction_id: str | None = Field(
        default=None, description="the running charging transaction (OCPP); absent when none"
    )
    capabilities: Capabilities | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


class GridFrequency(_Payload):
    """Grid frequency over one window ``[window_start_ms, window_end_ms)`` at one site."""

    schema_: Literal["grid_frequency/1"] = Field(default="grid_frequency/1", alias="schema")
    site: SiteId
    ts_ms: EpochMs = Field(description="end of the window")
    window_start_ms: EpochMs
    window_end_ms: EpochMs
    nominal_hz: float
    mean_hz: float
    min_hz: float
    max_hz: float
    deviation_hz: float = Field(description="mean_hz - nominal_hz")
    rocof_hz_per_s: float = Field(description="rate of change of frequency over the window")
    samples: Annotated[int, Field(ge=1)]
    assets: Annotated[int, Field(ge=1)] = Field(description="assets that reported a frequency")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


DispatchMode = Literal["off", "droop", "fcr"]


class Forecast(_Payload):
    """SoC forecast and flexibility envelope of one car or battery inverter.

    Published at most once a second per asset (``dispatch.forecast_interval_s``) from the
    reading ``seq`` of ``ts_ms``. Powers are positive numbers in the direction their name
    says; energies are at the battery.
    """

    schema_: Literal["forecast/1"] = Field(default="forecast/1", alias="schema")
    site: SiteId
    asset: AssetId
    kind: AssetKind
    ts_ms: EpochMs = Field(description="time of the reading the forecast starts from")
    seq: Annotated[int, Field(ge=0)]
    soc_pct: Annotated[float, Field(ge=0, le=100)]
    capacity_wh: Annotated[float, Field(gt=0)]
    power_w: float = Field(description="power now, + charge, - discharge")
    setpoint_w: float = Field(description="setpoint the forecast assumes, + charge, - discharge")
    departure_ms: EpochMs | None = Field(
        default=None, description="departure of the car (none for a stationary battery)"
    )
    target_soc_pct: Annotated[float, Field(ge=0, le=100)] | None = None
    soc_at_departure_pct: Annotated[float, Field(ge=0, le=100)] | None = Field(
        default=None, description="SoC expected at departure if the setpoint stays as it is"
    )
    earliest_target_ms: EpochMs | None = Field(
        default=None, description="earliest time the target SoC is reached at full charge power"
    )
    energy_to_target_wh: Annotated[float, Field(ge=0)] | None = None
    max_charge_w: Annotated[float, Field(ge=0)] = Field(description="charge allowed now")
    max_discharge_w: Annotated[float, Field(ge=0)] = Field(description="discharge allowed now")
    discharge_energy_wh: Annotated[float, Field(ge=0)] = Field(
        description="energy that can be discharged now while still reaching the target by "
        "departure (down to the SoC floor for a stationary battery)"
    )
    must_charge_w: Annotated[float, Field(ge=0)] = Field(
        default=0.0, description="charge power needed from now on to reach the target in time"
    )
    v2x: bool = Field(description="the asset can discharge (ISO 15118-20 car and V2X station)")
    needs_source: Literal["ev", "site_default", "battery"] = Field(
        description="where the charging needs come from: the car, the site's defaults, or a "
        "stationary battery (no departure)"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


class DispatchCommand(_Payload):
    """One absolute setpoint for one asset (never a delta), applied at most once.

    ``command_id`` is derived from the reading that caused the decision and the decision
    itself, so a replay of the same inputs gives the same id.
    """

    schema_: Literal["command/1"] = Field(default="command/1", alias="schema")
    site: SiteId
    asset: AssetId
    ts_ms: EpochMs = Field(description="time of the reading that caused the command")
    seq: Annotated[int, Field(ge=0)] = Field(description="seq of that reading")
    boot: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None, description="boot of that reading"
    )
    command_id: Annotated[str, Field(min_length=1, max_length=128)]
    issued_ms: EpochMs = Field(description="when the pipeline received that reading")
    setpoint_w: float = Field(description="absolute setpoint, + charge, - discharge")
    base_setpoint_w: float = Field(default=0.0, description="the schedule the response adds to")
    valid_until_ms: EpochMs
    mode: Literal["droop", "fcr", "manual"] = Field(
        description="droop or fcr: the dataflow's dispatch; manual: an operator's command "
        "through the REST API (POST /api/v1/dispatch)"
    )
    reason: Annotated[str, Field(min_length=1, max_length=256)]
    freq_hz: float | None = Field(default=None, description="the frequency the decision used")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


AckResult = Literal["applied", "clamped", "rejected", "duplicate", "stale", "expired", "failed"]
"""What the control writer did with a command (``ack.result``).

=============  ===========================================================================
result         meaning
=============  ===========================================================================
``applied``    written as asked and read back from the device
``clamped``    a safety rule changed the value (``rules``); the clamped value was written
               and read back (a fault writes 0 W: ``rules`` = ``["fault"]``)
``rejected``   refused by a safety rule (``reason``, e.g. ``max capacity reached``);
               nothing written, the device keeps its setpoint
``duplicate``  this ``command_id`` was handled before; nothing written, ``applied_w`` is
               what the first delivery applied
``stale``      issued before the last command applied to the asset; nothing written
``expired``    received after ``valid_until_ms``; nothing written
``failed``     the write or the read-back failed, or the device reads back another value
               (``reason``); not recorded, so the same ``command_id`` may be tried again
=============  ===========================================================================
"""

#: The values of ``AckResult``.
ACK_RESULTS: frozenset[str] = frozenset(get_args(AckResult))


class DispatchAck(_Payload):
    """What the control writer did with one command, made after the device read back.

    ``ts_ms`` is when the ack was made; ``seq`` and ``issued_ms`` are copied from the
    command (``seq`` of the reading that caused it), so an ack pairs with its command by
    ``command_id`` and with the reading by ``(asset, seq)``. Latencies run to the confirmed
    write (the read-back) and are absent when nothing was written; they may be negative
    when the pipeline's and the writer's clocks disagree.
    """

    schema_: Literal["ack/1"] = Field(default="ack/1", alias="schema")
    site: SiteId
    asset: AssetId
    ts_ms: EpochMs = Field(description="when the ack was made")
    seq: Annotated[int, Field(ge=0)] = Field(description="seq of the command (its reading)")
    command_id: Annotated[str, Field(min_length=1, max_length=128)]
    result: AckResult
    reason: str | None = Field(default=None, description="why, for every result but applied")
    requested_w: float = Field(description="the command's setpoint, + charge, - discharge")
    applied_w: float | None = Field(
        default=None,
        description="setpoint after clamping that was written (for a duplicate: the first "
        "delivery's); absent when nothing was written",
    )
    readback_w: float | None = Field(
        default=None, description="setpoint the device reports after the write, + charge"
    )
    measured_w: float | None = Field(
        default=None,
        description="power the device measured after the write, + charge (OCPP: the station's "
        "next meter value after it accepted the profile); absent when none came in time",
    )
    rules: list[str] = Field(
        default_factory=list, description="clamp rules that changed the value, in order"
    )
    issued_ms: EpochMs = Field(description="the command's issued_ms")
    latency_from_issued_ms: int | None = Field(
        default=None, description="confirmed write (read-back) minus the command's issued_ms"
    )
    latency_from_telemetry_ms: int | None = Field(
        default=None, description="confirmed write (read-back) minus the command's ts_ms"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


class SiteSummary(_Payload):
    """Site aggregate for a higher-level dispatcher (retained, at least once a second)."""

    schema_: Literal["summary/1"] = Field(default="summary/1", alias="schema")
    site: SiteId
    ts_ms: EpochMs
    seq: Annotated[int, Field(ge=0)]
    mode: DispatchMode
    assets_total: Annotated[int, Field(ge=0)]
    assets_online: Annotated[int, Field(ge=0)]
    power_w: float = Field(description="sum of the online assets' power, + import")
    flex_charge_w: Annotated[float, Field(ge=0)] = Field(description="charge the fleet allows")
    flex_discharge_w: Annotated[float, Field(ge=0)] = Field(
        description="discharge the fleet allows"
    )
    freq_hz: float | None = Field(
        default=None, description="site frequency: median of fresh readings of online assets"
    )
    base_w: float = Field(default=0.0, description="sum of the online assets' base setpoints")
    requested_w: float = Field(default=0.0, description="response requested, + charge")
    allocated_w: float = Field(default=0.0, description="response allocated to assets")
    shortfall_w: Annotated[float, Field(ge=0)] = Field(
        default=0.0, description="|requested - allocated| the fleet cannot deliver"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


class CollectorStatus(_Payload):
    """Retained presence of one collector process; its last will says ``online: false``."""

    schema_: Literal["collector/1"] = Field(default="collector/1", alias="schema")
    site: SiteId
    component: str
    ts_ms: EpochMs
    online: bool
    boot: str | None = None
    assets: list[str] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


#: What a component keeps of a refused input on the dead-letter topic: the payload's first
#: characters (its reason: a tenth of that), so a huge input does not travel twice.
DEAD_LETTER_LIMIT = 10_000


class DeadLetter(_Payload):
    """A refused input, with why it was refused."""

    schema_: Literal["deadletter/1"] = Field(default="deadletter/1", alias="schema")
    site: SiteId = Field(description="the site of the component that refused the input")
    component: str
    ts_ms: EpochMs
    reason: str
    topic: str | None = Field(default=None, description="where the input came from")
    payload: str = Field(description="the raw input: UTF-8 text, or base64 when not text")
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()

    @classmethod
    def of(
        cls,
        raw: bytes,
        *,
        site: str,
        component: str,
        ts_ms: int,
        reason: str,
        topic: str | None,
        limit: int | None = None,
    ) -> DeadLetter:
        """The dead letter of ``raw``: kept as UTF-8 text when it decodes, else base64.

        ``limit`` cuts the reason to a tenth of it and the kept payload to it (characters).
        """
        encoding: Literal["utf-8", "base64"] = "utf-8"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
        if limit is not None:
            reason, text = reason[: limit // 10], text[:limit]
        return cls(
            site=site,
            component=component,
            ts_ms=ts_ms,
            reason=reason,
            topic=topic,
            payload=text,
            payload_encoding=encoding,
        )


CsmsRequestKind = Literal["setpoint", "local_frequency", "clear"]
"""What control asks the CSMS to do with one EVSE (``csms-setpoint/1`` ``kind``)."""

CsmsStatus = Literal["accepted", "rejected", "refused", "timeout", "offline", "error"]
"""What became of a request to the CSMS (``csms-result/1`` ``status``).

``accepted``/``rejected`` are the station's answer; ``refused``: not sent (``reason``:
e.g. discharge to a charge-only car, an expired request); ``timeout``: the station did not
answer in time; ``offline``: the station is not connected; ``error``: a CALLERROR or an
invalid answer.
"""


class FreqWattPoint(BaseModel):
    """One point of a frequency-watt curve (OCPP 2.1 ``V2XFreqWattPointType``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    freq_hz: Annotated[float, Field(gt=0, lt=100)]
    power_w: float = Field(description="power at that frequency, + charge, - discharge")


class CsmsRequest(_Payload):
    """Control asks the CSMS to program one EVSE (internal, ``…/csms/{asset}/setpoint``).

    ``request_id`` correlates the answer (the dispatch command's ``command_id``) and makes
    the request idempotent: the CSMS executes an id once and answers a repeat with the same
    result. A request received after ``valid_until_ms`` is refused. ``kind``: ``setpoint``
    (``power_w`` absolute, + charge), ``local_frequency`` (OCPP 2.1 LocalFrequency profile:
    ``curve`` around the baseline ``power_w``, default 0) or ``clear`` (remove gridflex's
    profiles of the EVSE).
    """

    schema_: Literal["csms-setpoint/1"] = Field(default="csms-setpoint/1", alias="schema")
    site: SiteId
    asset: AssetId
    ts_ms: EpochMs = Field(description="when control made the request")
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    kind: CsmsRequestKind
    power_w: float | None = Field(
        default=None, description="setpoint (setpoint) or baseline (local_frequency), + charge"
    )
    valid_until_ms: EpochMs = Field(description="the request is refused when received later")
    hold_until_ms: EpochMs | None = Field(
        default=None,
        description="when the station drops the profile and falls back to its default (the "
        "profile's validTo: the device's own fail-safe); none = until replaced",
    )
    curve: Annotated[list[FreqWattPoint], Field(min_length=1, max_length=20)] | None = Field(
        default=None, description="frequency-watt curve for local_frequency, frequencies rising"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> CsmsRequest:
        if self.kind == "setpoint" and self.power_w is None:
            raise ValueError("a setpoint request needs power_w")
        if self.kind == "local_frequency" and not self.curve:
            raise ValueError("a local_frequency request needs a curve")
        return self

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


class CsmsResult(_Payload):
    """The CSMS's answer to one ``csms-setpoint/1`` (internal, ``…/csms/{asset}/result``).

    Two messages per accepted request: ``phase`` ``answer`` as soon as the station answered
    the SetChargingProfile, then ``readback`` with the power of the station's next meter
    value after that answer (``measured_w``, absent when none came within twice the meter
    interval). Any other outcome has only the ``answer``.
    """

    schema_: Literal["csms-result/1"] = Field(default="csms-result/1", alias="schema")
    site: SiteId
    asset: AssetId
    ts_ms: EpochMs = Field(description="when the CSMS made this message")
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    kind: CsmsRequestKind
    phase: Literal["answer", "readback"]
    status: CsmsStatus
    reason: str | None = None
    requested_w: float | None = None
    sent_w: float | None = Field(
        default=None, description="setpoint or limit the profile carries, + charge"
    )
    operation_mode: str | None = Field(
        default=None,
        description="CentralSetpoint, ChargingOnly, LocalFrequency (OCPP 2.1) or Limit (2.0.1)",
    )
    purpose: str | None = Field(
        default=None, description="the profile's purpose: TxProfile or TxDefaultProfile"
    )
    ocpp_version: str | None = None
    station_id: str | None = None
    evse_id: Annotated[int, Field(ge=0)] | None = None
    answered_ms: EpochMs | None = Field(
        default=None, description="when the station's answer arrived at the CSMS"
    )
    measured_w: float | None = Field(
        default=None, description="power of the station's next meter value after the answer"
    )
    measured_ms: EpochMs | None = Field(default=None, description="that meter value's time")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


#: Every payload model, by its ``schema`` value.
PAYLOADS: dict[str, type[_Payload]] = {
    "telemetry/1": Telemetry,
    "status/1": AssetStatus,
    "grid_frequency/1": GridFrequency,
    "forecast/1": Forecast,
    "command/1": DispatchCommand,
    "ack/1": DispatchAck,
    "summary/1": SiteSummary,
    "collector/1": CollectorStatus,
    "deadletter/1": DeadLetter,
    "csms-setpoint/1": CsmsRequest,
    "csms-result/1": CsmsResult,
}


def parse_payload(raw: bytes | str) -> _Payload:
    """Parse and validate a JSON payload by its ``schema`` field.

    Raises ``ContractError`` with a one-line reason when the payload is not JSON, names no
    known schema, or does not validate.
    """
    from gridflex import jsonio

    try:
        obj: Any = jsonio.loads(raw)
    except ValueError as exc:
        raise ContractError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ContractError("payload is not a JSON object")
    schema = obj.get("schema")
    model = PAYLOADS.get(schema) if isinstance(schema, str) else None
    if model is None:
        raise ContractError(f"unknown schema {schema!r:.60}")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise ContractError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """Turn a pydantic error into one line: ``field: what was expected``."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
