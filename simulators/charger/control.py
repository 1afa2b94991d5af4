"""The car's answer to the charging profile in force (pure).

``control_from_profile`` reduces a SetChargingProfile's first period (library snake_case
keys, W only) to a ``Control``; ``requested_power_w`` is the power (+ charging) the car asks
for under it, before the car's and the station's physical limits (``simulators.ev.step``).
OCPP 2.1 CentralSetpoint: ``setpoint`` within ``limit`` and ``dischargeLimit``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simulators.ev import CarSpec

__all__ = ["Control", "control_from_profile", "requested_power_w"]


@dataclass(frozen=True)
class Control:
    """The charging profile in force, reduced to what the car has to follow."""

    operation_mode: str
    limit_w: float | None = None
    setpoint_w: float | None = None
    discharge_limit_w: float | None = None


def control_from_profile(profile: dict[str, Any]) -> Control:
    """Read the first period of a charging profile (library snake_case keys) in W.

    Raises ``ValueError`` for a schedule in A (the simulator only takes W) or without periods.
    """
    schedule = profile["charging_schedule"][0]
    if schedule.get("charging_rate_unit") != "W":
        raise ValueError("only chargingRateUnit W is supported")
    periods = schedule["charging_schedule_period"]
    if not periods:
        raise ValueError("the schedule has no period")
    period = periods[0]
    return Control(
        operation_mode=period.get("operation_mode", "ChargingOnly"),
        limit_w=period.get("limit"),
        setpoint_w=period.get("setpoint"),
        discharge_limit_w=period.get("discharge_limit"),
    )


def requested_power_w(car: CarSpec, soc_pct: float, control: Control | None) -> float:
    """The power the car asks for (+ charging) before its physical limits.

    Without a profile the car charges at full power up to its target SoC. A limit caps that.
    A CentralSetpoint is followed as given (also above the target SoC), kept within ``limit``
    and ``dischargeLimit``.
    """
    wants_w = car.max_charge_w if soc_pct < car.target_soc_pct else 0.0
    if control is None:
        return wants_w
    if control.operation_mode == "CentralSetpoint" and control.setpoint_w is not None:
        power_w = control.setpoint_w
        if control.limit_w is not None:
            power_w = min(power_w, control.limit_w)
        if control.discharge_limit_w is not None:
            power_w = max(power_w, control.discharge_limit_w)
        return power_w
    if control.limit_w is not None:
        return min(wants_w, max(0.0, control.limit_w))
    return wants_w
