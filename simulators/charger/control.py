"""The car's answer to the charging profiles in force (pure).

``control_from_profile`` reduces a SetChargingProfile's first period (library snake_case
keys, W only) to a ``Control``; ``requested_power_w`` is the power (+ charging) the car asks
for under it, before the car's and the station's physical limits (``simulators.ev.step``):

- OCPP 2.1 CentralSetpoint: ``setpoint`` within ``limit`` and ``dischargeLimit``;
- OCPP 2.1 LocalFrequency: ``v2xBaseline`` plus the ``v2xFreqWattCurve`` at the frequency
  the station measures (``curve_power_w``), within ``limit`` and ``dischargeLimit``;
- a ``limit`` (2.0.1, ChargingOnly, TxDefaultProfile) caps the car's own wish.

``share_station_max`` applies a ChargingStationMaxProfile: the EVSEs' charging together
stays within the station's limit.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from simulators.ev import CarSpec

__all__ = [
    "Control",
    "control_from_profile",
    "curve_power_w",
    "requested_power_w",
    "share_station_max",
]


@dataclass(frozen=True)
class Control:
    """A charging profile in force, reduced to what the car has to follow."""

    operation_mode: str
    limit_w: float | None = None
    setpoint_w: float | None = None
    discharge_limit_w: float | None = None
    baseline_w: float | None = None
    freq_curve: tuple[tuple[float, float], ...] = ()


def control_from_profile(profile: dict[str, Any]) -> Control:
    """Read the first period of a charging profile (library snake_case keys) in W.

    Raises ``ValueError`` for a schedule in A (the simulator only takes W), without periods,
    or a LocalFrequency period without a curve.
    """
    schedule = profile["charging_schedule"][0]
    if schedule.get("charging_rate_unit") != "W":
        raise ValueError("only chargingRateUnit W is supported")
    periods = schedule["charging_schedule_period"]
    if not periods:
        raise ValueError("the schedule has no period")
    period = periods[0]
    mode = period.get("operation_mode", "ChargingOnly")
    curve = tuple(
        (float(p["frequency"]), float(p["power"])) for p in period.get("v2x_freq_watt_curve") or ()
    )
    if mode == "LocalFrequency" and not curve:
        raise ValueError("LocalFrequency needs a v2xFreqWattCurve")
    return Control(
        operation_mode=mode,
        limit_w=period.get("limit"),
        setpoint_w=period.get("setpoint"),
        discharge_limit_w=period.get("discharge_limit"),
        baseline_w=period.get("v2x_baseline"),
        freq_curve=curve,
    )


def curve_power_w(curve: Sequence[tuple[float, float]], freq_hz: float) -> float:
    """A frequency-watt curve at ``freq_hz``: linear between points, flat beyond the ends."""
    freqs = [f for f, _ in curve]
    i = bisect.bisect_right(freqs, freq_hz)
    if i == 0:
        return curve[0][1]
    if i == len(curve):
        return curve[-1][1]
    (f0, p0), (f1, p1) = curve[i - 1], curve[i]
    return p0 + (p1 - p0) * (freq_hz - f0) / (f1 - f0)


def _within(control: Control, power_w: float) -> float:
    if control.limit_w is not None:
        power_w = min(power_w, control.limit_w)
    if control.discharge_limit_w is not None:
        power_w = max(power_w, control.discharge_limit_w)
    return power_w


def requested_power_w(
    car: CarSpec, soc_pct: float, control: Control | None, freq_hz: float | None = None
) -> float:
    """The power the car asks for (+ charging) before its physical limits.

    Without a profile the car charges at full power up to its target SoC. A limit caps that.
    A CentralSetpoint is followed as given (also above the target SoC), and so is a
    LocalFrequency curve at ``freq_hz`` (the baseline alone when no frequency is known),
    each kept within ``limit`` and ``dischargeLimit``.
    """
    wants_w = car.max_charge_w if soc_pct < car.target_soc_pct else 0.0
    if control is None:
        return wants_w
    if control.operation_mode == "CentralSetpoint" and control.setpoint_w is not None:
        return _within(control, control.setpoint_w)
    if control.operation_mode == "LocalFrequency":
        power_w = control.baseline_w or 0.0
        if freq_hz is not None:
            power_w += curve_power_w(control.freq_curve, freq_hz)
        return _within(control, power_w)
    if control.limit_w is not None:
        return min(wants_w, max(0.0, control.limit_w))
    return wants_w


def share_station_max(requested_w: Sequence[float], max_w: float | None) -> list[float]:
    """Scale the EVSEs' charging down so that together it stays within ``max_w``.

    Discharging EVSEs are left as they are; ``max_w`` None is no limit. Each charging EVSE
    keeps its share: ``p_i * max_w / sum(charging p)``.
    """
    charging = sum(p for p in requested_w if p > 0)
    if max_w is None or charging <= max_w:
        return list(requested_w)
    factor = max(0.0, max_w) / charging
    return [p * factor if p > 0 else p for p in requested_w]
