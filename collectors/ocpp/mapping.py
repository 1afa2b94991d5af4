"""Pure conversions between OCPP 2.0.1/2.1 payloads and gridflex's telemetry contract.

No I/O here: the CSMS hands in the validated wire payloads (camelCase dicts, exactly as in
the OCPP specification) and publishes what these functions return. What goes the other way
(setpoints as charging profiles) is decided in ``control.ocpp_plan``: every device write
lives in ``control/``.

Measurands to telemetry fields (OCPP 2.0.1/2.1 Part 2, ``MeasurandEnumType``; values are
scaled by ``10 ** unitOfMeasure.multiplier`` and converted from kW/kWh/kV/kA/...):

====================================  =====================================================
measurand                              telemetry field
====================================  =====================================================
``Power.Active.Import`` (W)            ``power_w`` = import - export (+ charging)
``Power.Active.Export`` (W)            (subtracted: - discharging)
``Energy.Active.Import.Register``      ``energy_import_wh`` (cumulative register)
``Energy.Active.Export.Register``      ``energy_export_wh`` (cumulative register)
``SoC`` (Percent)                      ``soc_pct``
``Current.Import`` / ``Current.Export``  ``current_a`` = import - export
``Voltage`` (V)                        ``voltage_v``
``Frequency``                          ``freq_hz``
``Power.Active.Setpoint`` (2.1)        ``setpoint_w``
====================================  =====================================================

A value without ``phase`` is the total and is preferred. With only per-phase values, powers
and currents of L1, L2, L3 (or L1-N, L2-N, L3-N) are summed for power and averaged for
current; phase-to-neutral voltages are averaged. Among several totals of one measurand the
``Outlet`` location (the default) wins, then the first one sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gridflex.contract import EvChargingNeeds, TelemetryStatus

__all__ = [
    "BPT_MODES",
    "LINE_TO_LINE_ABOVE_V",
    "MeterReading",
    "ac_power_w",
    "charging_needs",
    "device_status",
    "format_ocpp_time",
    "parse_ocpp_time",
    "read_meter_value",
    "telemetry_status",
]

#: ISO 15118-20 bidirectional power transfer modes (OCPP 2.1 ``EnergyTransferModeEnumType``).
BPT_MODES = frozenset({"AC_BPT", "AC_BPT_DER", "DC_BPT", "DC_ACDP_BPT"})

_PHASES = {"AC_single_phase": 1, "AC_two_phase": 2, "AC_three_phase": 3}

# --------------------------------------------------------------------------- timestamps


def format_ocpp_time(ts: datetime | int) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix and milliseconds (strict stations refuse ``+00:00``).

    ``ts`` is an aware datetime or UTC epoch milliseconds.
    """
    if isinstance(ts, int):
        ts = datetime.fromtimestamp(ts / 1000, tz=UTC)
    elif ts.tzinfo is None:
        raise ValueError("naive datetime: gridflex only handles timezone-aware UTC times")
    text = ts.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.removesuffix("+00:00") + "Z"


def parse_ocpp_time(text: str) -> int:
    """Parse an OCPP (RFC 3339) timestamp to UTC epoch milliseconds.

    A timestamp without an offset is read as UTC (OCPP requires UTC). Raises ``ValueError``
    when the text is not a date-time.
    """
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return math.floor(parsed.timestamp() * 1000 + 0.5)


# --------------------------------------------------------------------------- meter values


@dataclass(frozen=True)
class MeterReading:
    """One OCPP ``MeterValueType`` in gridflex units; None where the station sent nothing."""

    ts_ms: int
    power_w: float | None = None
    energy_import_wh: float | None = None
    energy_export_wh: float | None = None
    soc_pct: float | None = None
    current_a: float | None = None
    voltage_v: float | None = None
    freq_hz: float | None = None
    setpoint_w: float | None = None


# unit -> factor to the gridflex unit of its quantity (W, Wh, A, V, %, Hz)
_UNIT_FACTORS: dict[str, float] = {
    "W": 1.0,
    "kW": 1000.0,
    "Wh": 1.0,
    "kWh": 1000.0,
    "A": 1.0,
    "V": 1.0,
    "kV": 1000.0,
    "Percent": 1.0,
    "Hz": 1.0,
}

_DEFAULT_UNIT = {
    "Power": "W",
    "Energy": "Wh",
    "Current": "A",
    "Voltage": "V",
    "SoC": "Percent",
    "Frequency": "Hz",
}

_FIELDS = {
    "Power.Active.Import": "power_import",
    "Power.Active.Export": "power_export",
    "Energy.Active.Import.Register": "energy_import_wh",
    "Energy.Active.Export.Register": "energy_export_wh",
    "SoC": "soc_pct",
    "Current.Import": "current_import",
    "Current.Export": "current_export",
    "Voltage": "voltage_v",
    "Frequency": "freq_hz",
    "Power.Active.Setpoint": "setpoint_w",
}

_AVERAGED = {"current_import", "current_export", "voltage_v", "soc_pct", "freq_hz"}
_LINE_PHASES = frozenset({"L1", "L2", "L3", "L1-N", "L2-N", "L3-N"})


def _scaled(sampled: Mapping[str, Any], measurand: str) -> float:
    """The value of one ``SampledValueType`` in the gridflex unit of its measurand."""
    unit_of_measure = sampled.get("unitOfMeasure")
    unit = multiplier = None
    if unit_of_measure:
        unit = unit_of_measure.get("unit")
        multiplier = unit_of_measure.get("multiplier")
    if not unit:
        unit = _DEFAULT_UNIT.get(measurand.split(".", 1)[0], "Wh")
    factor = _UNIT_FACTORS.get(unit)
    if factor is None:
        raise ValueError(f"{measurand}: unit {unit!r} is not supported")
    value = float(sampled["value"]) * factor
    if multiplier:  # None or 0: no scaling (x 10**0)
        value *= 10.0 ** int(multiplier)
    return value


def read_meter_value(meter_value: Mapping[str, Any]) -> MeterReading:
    """Convert one OCPP ``MeterValueType`` (``timestamp`` + ``sampledValue``) to a reading.

    Measurands gridflex does not use are ignored. Raises ``ValueError`` for an unreadable
    timestamp or an unsupported unit of a used measurand.
    """
    ts_ms = parse_ocpp_time(meter_value["timestamp"])
    values: dict[str, float] = {}  # the totals: values without phase
    outlet: set[str] = set()  # ... of those, the ones from the Outlet location
    phased: dict[str, list[float]] | None = None
    for sampled in meter_value.get("sampledValue", ()):
        measurand = sampled.get("measurand", "Energy.Active.Import.Register")
        name = _FIELDS.get(measurand)
        if name is None:
            continue
        value = _scaled(sampled, measurand)
        phase = sampled.get("phase")
        if phase is None:
            at_outlet = sampled.get("location", "Outlet") == "Outlet"
            if name not in values or (at_outlet and name not in outlet):
                values[name] = value
                if at_outlet:
                    outlet.add(name)
        elif phase in _LINE_PHASES:
            if phased is None:
                phased = {}
            phased.setdefault(name, []).append(value)
    if phased is not None:
        for name, phase_values in phased.items():
            if name in values:
                continue
            total = math.fsum(phase_values)
            values[name] = total / len(phase_values) if name in _AVERAGED else total

    get = values.get
    power_w: float | None = None
    if "power_import" in values or "power_export" in values:
        power_w = get("power_import", 0.0) - get("power_export", 0.0)
    current_a: float | None = None
    if "current_import" in values or "current_export" in values:
        current_a = get("current_import", 0.0) - get("current_export", 0.0)
    return MeterReading(
        ts_ms=ts_ms,
        power_w=power_w,
        energy_import_wh=get("energy_import_wh"),
        energy_export_wh=get("energy_export_wh"),
        soc_pct=get("soc_pct"),
        current_a=current_a,
        voltage_v=get("voltage_v"),
        freq_hz=get("freq_hz"),
        setpoint_w=get("setpoint_w"),
    )


_SUSPENDED = frozenset({"SuspendedEV", "SuspendedEVSE"})
_IDLE_CHARGING_STATES = frozenset({"EVConnected", "Idle"})
_IDLE_CONNECTOR = frozenset({"Available", "Occupied", "Reserved"})


def telemetry_status(
    connector_status: str | None,
    charging_state: str | None,
    faulted: bool,
    *,
    power_w: float = 0.0,
    ended: bool = False,
) -> TelemetryStatus | None:
    """The telemetry ``status`` of a station, in the contract's vocabulary.

    The charging state (``ChargingStateEnumType``: ``Charging``, ``SuspendedEV``,
    ``SuspendedEVSE``, ``EVConnected``, ``Idle``) comes from the running transaction, the
    connector status (``ConnectorStatusEnumType``: ``Available``, ``Occupied``,
    ``Reserved``, ``Unavailable``, ``Faulted``) from StatusNotification; ``ended`` is true
    for the meter values of a TransactionEvent ``Ended``. First match wins:

    ==========================================================  ================
    input                                                       status
    ==========================================================  ================
    ``faulted`` (a fault code) or connector ``Faulted``         ``fault``
    connector ``Unavailable``                                   ``unavailable``
    ``ended``                                                   ``idle``
    ``Charging`` and ``power_w`` < 0 (OCPP 2.1 V2X)             ``discharging``
    ``Charging``                                                ``charging``
    ``SuspendedEV``, ``SuspendedEVSE``                          ``suspended``
    ``EVConnected``, ``Idle``                                   ``idle``
    connector ``Available``, ``Occupied``, ``Reserved``         ``idle``
    nothing known                                               None
    ==========================================================  ================
    """
    if faulted or connector_status == "Faulted":
        return "fault"
    if connector_status == "Unavailable":
        return "unavailable"
    if ended:
        return "idle"
    if charging_state == "Charging":
        return "discharging" if power_w < 0 else "charging"
    if charging_state in _SUSPENDED:
        return "suspended"
    if charging_state in _IDLE_CHARGING_STATES or connector_status in _IDLE_CONNECTOR:
        return "idle"
    return None


def device_status(
    connector_status: str | None, charging_state: str | None, *, ended: bool = False
) -> str | None:
    """The station's own word for ``device_status``.

    ``Ended`` for the meter values of a TransactionEvent ``Ended``, else the transaction's
    charging state, else the connector status.
    """
    if ended:
        return "Ended"
    return charging_state or connector_status


# --------------------------------------------------------------------------- charging needs


def _num(obj: Mapping[str, Any] | None, key: str) -> float | None:
    if not obj or obj.get(key) is None:
        return None
    return float(obj[key])


def _pct(value: float | None) -> float | None:
    return None if value is None else min(100.0, max(0.0, value))


#: A stated AC voltage above this on a multi-phase supply is line-to-line (V).
LINE_TO_LINE_ABOVE_V = 250.0


def ac_power_w(current_a: float, voltage_v: float, phases: int) -> float:
    """AC power limit in W of ``current_a`` per phase at a stated ``voltage_v`` on ``phases``.

    ``P = I x U_phase x phases`` with ``U_phase`` the phase-to-neutral voltage. OCPP's
    ``ACChargingParametersType.evMaxVoltage`` (from ISO 15118-2 ``EVMaxVoltage``) does not
    say whether a multi-phase voltage is phase-to-neutral (230 V) or line-to-line (400 V).
    Low-voltage phase-to-neutral supplies are 230-240 V nominal (IEC 60038), so on two or
    three phases a stated voltage above ``LINE_TO_LINE_ABOVE_V`` is taken as line-to-line
    and ``U_phase = U / sqrt(3)``; one phase is always phase-to-neutral. Limitation: a
    North American 208 V line-to-line supply stated as 208 V is below the threshold and
    read as phase-to-neutral (the result is then sqrt(3) too high).

    Examples: 32 A at 230 V on one phase is 7,360 W; 32 A at 400 V on three phases is
    32 x 230.94 x 3 = 22,170 W; 16 A at 230 V on three phases is 11,040 W.
    """
    phase_v = voltage_v
    if phases > 1 and voltage_v > LINE_TO_LINE_ABOVE_V:
        phase_v = voltage_v / math.sqrt(3.0)
    return current_a * phase_v * phases


def charging_needs(needs: Mapping[str, Any]) -> EvChargingNeeds:
    """Convert an OCPP ``ChargingNeedsType`` (NotifyEVChargingNeeds) to the contract model.

    - ``v2x`` is true when the requested energy transfer is bidirectional (``*_BPT``, ISO
      15118-20); an ISO 15118-2 car requests ``AC_*``/``DC`` and is charge-only.
    - Powers: ``v2xChargingParameters.maxChargePower``/``maxDischargePower`` (2.1), else
      ``dcChargingParameters.evMaxPower``, else AC ``evMaxCurrent`` (A per phase) at
      ``evMaxVoltage`` on the phases of ``requestedEnergyTransfer`` (``ac_power_w``: a
      multi-phase voltage above 250 V is line-to-line, so 400 V, 32 A, three phases is
      22.2 kW, not 38.4 kW).
    - Energy: ``evTargetEnergyRequest`` (2.1), else ``energyAmount`` of the AC/DC parameters.
    - ``target_soc_pct`` from ``targetSoC`` (2.1), else the DC ``fullSoC``; ``min_soc_pct``
      derived from ``evMinV2XEnergyRequest`` (energy to the bottom of the V2X range), the
      present ``stateOfCharge`` and ``evEnergyCapacity`` when all three are known.
    """
    mode = str(needs.get("requestedEnergyTransfer", ""))
    ac = needs.get("acChargingParameters")
    dc = needs.get("dcChargingParameters")
    v2x_params = needs.get("v2xChargingParameters")
    v2x = mode in BPT_MODES

    max_charge_w = _num(v2x_params, "maxChargePower")
    if max_charge_w is None:
        max_charge_w = _num(dc, "evMaxPower")
    if max_charge_w is None and ac:
        max_charge_w = ac_power_w(
            float(ac["evMaxCurrent"]), float(ac["evMaxVoltage"]), _PHASES.get(mode, 1)
        )
    max_discharge_w = _num(v2x_params, "maxDischargePower") if v2x else 0.0

    requested_energy_wh = _num(v2x_params, "evTargetEnergyRequest")
    if requested_energy_wh is None:
        requested_energy_wh = _num(ac, "energyAmount")
    if requested_energy_wh is None:
        requested_energy_wh = _num(dc, "energyAmount")

    target_soc_pct = _num(v2x_params, "targetSoC")
    if target_soc_pct is None:
        target_soc_pct = _num(dc, "fullSoC")
    min_soc_pct: float | None = None
    soc_now = _num(dc, "stateOfCharge")
    capacity_wh = _num(dc, "evEnergyCapacity")
    min_v2x_wh = _num(v2x_params, "evMinV2XEnergyRequest")
    if soc_now is not None and capacity_wh and min_v2x_wh is not None:
        min_soc_pct = soc_now + 100.0 * min_v2x_wh / capacity_wh

    departure = needs.get("departureTime")
    return EvChargingNeeds(
        departure_ms=parse_ocpp_time(departure) if departure else None,
        requested_energy_wh=None if requested_energy_wh is None else max(0.0, requested_energy_wh),
        max_charge_w=None if max_charge_w is None else max(0.0, max_charge_w),
        max_discharge_w=None if max_discharge_w is None else max(0.0, max_discharge_w),
        min_soc_pct=_pct(min_soc_pct),
        target_soc_pct=_pct(target_soc_pct),
        v2x=v2x,
        energy_transfer_mode=mode or None,
    )
