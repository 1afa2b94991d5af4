"""The payloads of devices, the pipeline and the writer.

Telemetry, status, grid frequency, forecasts, commands, acks, the site summary, the
collectors' status and dead letters.
"""

from __future__ import annotations

import base64
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from gridflex.contract.base import AssetId, AssetKind, EpochMs, Payload, SiteId


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


class Telemetry(Payload):
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


class AssetStatus(Payload):
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


class GridFrequency(Payload):
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


class Forecast(Payload):
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


class DispatchCommand(Payload):
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


class DispatchAck(Payload):
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


class SiteSummary(Payload):
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


class CollectorStatus(Payload):
    """Retained presence of one collector process; its last will says ``online: false``."""

    schema_: Literal["collector/1"] = Field(default="collector/1", alias="schema")
    site: SiteId
    component: str
    ts_ms: EpochMs
    online: bool
    boot: str | None = None
    assets: list[str] = Field(default_factory=list)
    mqtt_dropped: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="messages the collector's MQTT client dropped since it started (its "
        "bounded queue was full while the broker was unreachable; the oldest go first); "
        "absent in the last will",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


#: What a component keeps of a refused input on the dead-letter topic: the payload's first
#: characters (its reason: a tenth of that), so a huge input does not travel twice.
DEAD_LETTER_LIMIT = 10_000


class DeadLetter(Payload):
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


class SiteTarget(Payload):
    """What the central dispatcher asks of one site (``gridflex central``, retained).

    The site's pipeline takes ``fcr_capacity_w`` as its ``[dispatch.fcr] capacity_w`` while
    the target is valid, and shares it across its assets as it shares its own. A target
    received after ``valid_until_ms`` is ignored; past ``valid_until_ms`` with no newer
    target, the site goes back to its own ``capacity_w``.
    """

    schema_: Literal["target/1"] = Field(default="target/1", alias="schema")
    site: SiteId
    ts_ms: EpochMs = Field(description="when the central made the allocation")
    seq: Annotated[int, Field(ge=0)] = Field(description="allocation round of the central")
    fcr_capacity_w: Annotated[float, Field(ge=0)] = Field(
        description="FCR capacity the site is to hold, W (full activation at full deviation)"
    )
    fleet_fcr_capacity_w: Annotated[float, Field(ge=0)] = Field(
        description="the fleet-level FCR capacity the central shares across its sites, W"
    )
    flex_w: Annotated[float, Field(ge=0)] = Field(
        description="the site's symmetric flexibility the share was based on, W"
    )
    valid_until_ms: EpochMs = Field(
        description="after this the site goes back to its own capacity (unless a newer target)"
    )
    reason: Annotated[str, Field(min_length=1, max_length=256)]

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()
