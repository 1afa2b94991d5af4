"""SoC forecast and flexibility envelope of one car or stationary battery (pure, no I/O).

Called once per reading per asset, so every function is a closed form over at most two
segments (no time stepping): a few microseconds a call.

Battery model (:class:`BatteryModel`)
-------------------------------------
* SoC in % of the usable capacity ``capacity_wh``; energies are at the battery, powers are
  AC at the meter, + charging (import), - discharging (export).
* One-way ``efficiency``: charging at ``P`` W AC puts ``P * efficiency`` into the battery;
  discharging at ``P`` W AC takes ``P / efficiency`` out of it.
* Constant-current/constant-voltage (CC-CV) taper: up to ``taper_soc_pct`` the charge limit
  is ``max_charge_w``; above it the limit falls linearly to 0 at 100 %
  (:func:`charge_limit_w`). In the taper the battery-side rate is linear in SoC,
  ``d(100 - s)/dt = -k (100 - s)`` with ``k = 100 * eff * max_charge_w /
  (3600 * capacity_wh * (100 - taper_soc_pct))`` per second, so SoC approaches 100 %
  exponentially and 100 % itself is never reached (unless ``taper_soc_pct`` is 100). A
  constant power ``P`` below the rating is held up to the knee ``100 - P (100 - taper) /
  max_charge_w`` where the taper limit meets it, then follows the taper.
* Stop points (battery health): no charge at/above ``soc_max_pct``, no discharge at/below
  ``soc_min_pct``; a SoC already beyond a stop point does not move further that way.
* ``derate`` (0..1, the device's thermal derating, e.g. IEC 61851-1 connector temperature)
  scales both power ratings in :func:`forecast`.

Charging needs (:class:`ChargingGoal`)
--------------------------------------
A departure time and a target SoC, as a car states them in ISO 15118-20 (``DepartureTime``,
``EVTargetEnergyRequest``) and as OCPP 2.1 ``NotifyEVChargingNeeds`` carries them
(``departureTime``, ``energyAmount``/``stateOfCharge``); without stated needs the caller
passes the site's defaults (``[dispatch.ev_defaults]``); a stationary battery has neither.

* A target above ``soc_max_pct`` is capped at ``soc_max_pct``; a target at or below the SoC
  now needs nothing (``energy_to_target_wh`` 0, ``must_charge_w`` 0).
* A departure in the past counts as "now": no time is left.
* A target of 100 % with a taper below 100 % is unreachable (the exponential never gets
  there): ``earliest_target_ms`` is None and ``must_charge_w`` is the charge limit.

Flexibility envelope (:class:`ForecastResult`)
----------------------------------------------
* ``must_charge_w``: the smallest constant AC power from now that reaches the target by
  departure (closed form below the taper; above it, ``w - ln w = d`` solved by Newton's
  method, i.e. the ``W_-1`` branch of Lambert's W); ``max_charge_w`` when even full power
  is not enough.
* ``discharge_energy_wh``: the battery energy that may be taken out within the next
  ``horizon_s`` so that charging at full (tapered, derated) power from ``now + horizon_s``
  still reaches the target by departure; with less than ``horizon_s`` left only the energy
  above the target. It never goes below the floor; a stationary battery (or a goal without
  a departure or a target) may go down to the floor; a charge-only asset
  (``max_discharge_w == 0``) has 0.
* ``max_discharge_w``: 0 for a charge-only asset, at/below the floor, or without discharge
  energy; else ``min(max_discharge_w * derate, discharge_energy_wh * 3600 * efficiency /
  horizon_s)``: dispatching it for ``horizon_s`` never endangers the departure need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "BatteryModel",
    "ChargingGoal",
    "ForecastResult",
    "charge_limit_w",
    "forecast",
    "soc_after",
    "time_to_soc_s",
]

_S_PER_H = 3600.0
_NEWTON_MAX_STEPS = 60


@dataclass(frozen=True, slots=True)
class BatteryModel:
    """A battery behind an AC charger: capacity, power ratings, stop points, losses, taper.

    ``capacity_wh``: usable capacity (Wh, > 0). ``max_charge_w``/``max_discharge_w``: AC
    ratings now (car, station and site limits combined, W, >= 0; a discharge rating of 0
    means charge-only, no V2X). ``soc_min_pct``/``soc_max_pct``: no discharge at/below the
    floor, no charge at/above the ceiling. ``efficiency``: one-way, in (0, 1].
    ``taper_soc_pct``: above it the charge limit falls linearly to 0 at 100 %.
    """

    capacity_wh: float
    max_charge_w: float
    max_discharge_w: float
    soc_min_pct: float = 10.0
    soc_max_pct: float = 90.0
    efficiency: float = 0.92
    taper_soc_pct: float = 80.0

    def __post_init__(self) -> None:
        if not self.capacity_wh > 0:
            raise ValueError(f"capacity_wh must be > 0, got {self.capacity_wh}")
        if not (self.max_charge_w >= 0 and self.max_discharge_w >= 0):
            raise ValueError("max_charge_w and max_discharge_w must be >= 0")
        if not 0.0 <= self.soc_min_pct <= self.soc_max_pct <= 100.0:
            raise ValueError("expected 0 <= soc_min_pct <= soc_max_pct <= 100")
        if not 0.0 < self.efficiency <= 1.0:
            raise ValueError(f"efficiency must be in (0, 1], got {self.efficiency}")
        if not 0.0 <= self.taper_soc_pct <= 100.0:
            raise ValueError(f"taper_soc_pct must be in [0, 100], got {self.taper_soc_pct}")


@dataclass(frozen=True, slots=True)
class ChargingGoal:
    """Departure (UTC epoch ms) and target SoC (%); both None for a stationary battery."""

    departure_ms: int | None
    target_soc_pct: float | None


@dataclass(frozen=True, slots=True)
class ForecastResult:
    """The SoC forecast and flexibility envelope at one reading (see the module docstring).

    Powers are AC and positive in the direction their name says; energies are at the
    battery; times are UTC epoch ms.
    """

    soc_at_departure_pct: float | None
    earliest_target_ms: int | None
    energy_to_target_wh: float | None
    max_charge_w: float
    max_discharge_w: float
    discharge_energy_wh: float
    must_charge_w: float


# --- private helpers on an explicit (possibly derated) rating -----------------------------


def _gain_pct_per_ws(model: BatteryModel) -> float:
    """SoC gained per second per W of AC charge power (%/(W s))."""
    return 100.0 * model.efficiency / (_S_PER_H * model.capacity_wh)


def _limit_w(soc_pct: float, model: BatteryModel, rating_w: float) -> float:
    if soc_pct >= model.soc_max_pct or rating_w <= 0.0:
        return 0.0
    taper_pct = model.taper_soc_pct
    if soc_pct <= taper_pct:
        return rating_w
    return rating_w * (100.0 - soc_pct) / (100.0 - taper_pct)


def _soc_after_charge(
    soc_pct: float, power_w: float, duration_s: float, model: BatteryModel, rating_w: float
) -> float:
    ceiling_pct = model.soc_max_pct
    if soc_pct >= ceiling_pct or rating_w <= 0.0 or power_w <= 0.0 or duration_s <= 0.0:
        return soc_pct
    p_w = min(power_w, rating_w)
    gain = _gain_pct_per_ws(model)
    taper_pct = model.taper_soc_pct
    knee_pct = 100.0 - p_w * (100.0 - taper_pct) / rating_w  # taper limit == p_w here
    if knee_pct > soc_pct:  # constant power up to the knee (or the ceiling)
        end_pct = min(knee_pct, ceiling_pct)
        rate = gain * p_w
        if rate <= 0.0:  # a power so small it underflows
            return soc_pct
        reach_s = (end_pct - soc_pct) / rate
        if duration_s <= reach_s:
            # min(): (end - soc) / rate * rate can round one ulp past the ceiling
            return min(soc_pct + rate * duration_s, ceiling_pct)
        if end_pct >= ceiling_pct:
            return ceiling_pct
        soc_pct, duration_s = end_pct, duration_s - reach_s
    # Tapered: 100 - s decays exponentially (taper_pct < 100 here, as knee <= soc < 100).
    k = gain * rating_w / (100.0 - taper_pct)
    return min(ceiling_pct, 100.0 - (100.0 - soc_pct) * math.exp(-k * duration_s))


def _soc_after_discharge(
    soc_pct: float, power_w: float, duration_s: float, model: BatteryModel, rating_w: float
) -> float:
    floor_pct = model.soc_min_pct
    if soc_pct <= floor_pct or rating_w <= 0.0 or power_w >= 0.0 or duration_s <= 0.0:
        return soc_pct
    p_w = min(-power_w, rating_w)
    rate = 100.0 * p_w / (model.efficiency * _S_PER_H * model.capacity_wh)
    return max(floor_pct, soc_pct - rate * duration_s)


def _time_to_soc(soc_pct: float, target_pct: float, model: BatteryModel, rating_w: float) -> float:
    if target_pct <= soc_pct:
        return 0.0
    if target_pct > model.soc_max_pct or rating_w <= 0.0:
        return math.inf
    rate = _gain_pct_per_ws(model) * rating_w
    if rate <= 0.0:  # a rating so small it underflows
        return math.inf
    taper_pct = model.taper_soc_pct
    time_s = 0.0
    if soc_pct < taper_pct:
        end_pct = min(target_pct, taper_pct)
        time_s = (end_pct - soc_pct) / rate
        if target_pct <= taper_pct:
            return time_s
        soc_pct = taper_pct
    if target_pct >= 100.0:
        return math.inf
    k = rate / (100.0 - taper_pct)
    if k <= 0.0:
        return math.inf
    return time_s + math.log((100.0 - soc_pct) / (100.0 - target_pct)) / k


def _soc_before(
    target_pct: float, duration_s: float, model: BatteryModel, rating_w: float
) -> float:
    """Lowest SoC from which full (tapered) power reaches ``target_pct`` in ``duration_s``."""
    if duration_s <= 0.0 or rating_w <= 0.0:
        return target_pct
    rate = _gain_pct_per_ws(model) * rating_w
    taper_pct = model.taper_soc_pct
    if target_pct > taper_pct:
        k = rate / (100.0 - taper_pct)
        if target_pct >= 100.0 or k <= 0.0:
            return target_pct  # nothing below 100 % reaches it through the taper
        taper_s = math.log((100.0 - taper_pct) / (100.0 - target_pct)) / k
        if duration_s <= taper_s:
            return 100.0 - (100.0 - target_pct) * math.exp(k * duration_s)
        target_pct, duration_s = taper_pct, duration_s - taper_s
    return target_pct - rate * duration_s


def _must_charge(
    soc_pct: float, target_pct: float, remaining_s: float, model: BatteryModel, rating_w: float
) -> float:
    """Smallest constant AC power reaching ``target_pct`` (> soc) within ``remaining_s``."""
    limit_w = _limit_w(soc_pct, model, rating_w)
    if remaining_s <= 0.0 or _time_to_soc(soc_pct, target_pct, model, rating_w) > remaining_s:
        return limit_w
    gain = _gain_pct_per_ws(model)
    linear_w = (target_pct - soc_pct) / (gain * remaining_s)
    taper_pct = model.taper_soc_pct
    if taper_pct >= 100.0 or linear_w * (100.0 - taper_pct) <= rating_w * (100.0 - target_pct):
        return min(linear_w, limit_w)  # the knee of linear_w is at or above the target
    # The knee u = 100 - s* lies below the target: (A/u - 1) + ln(u / (100 - target)) = k t
    # with A = 100 - soc. With u = A / w this is w - ln w = d (d >= 1 as full power is
    # enough); the root w >= 1 is on the W_-1 branch of Lambert's W. Newton from the right
    # (g convex and increasing for w > 1) converges monotonically.
    k = gain * rating_w / (100.0 - taper_pct)
    a_pct = 100.0 - soc_pct
    d = k * remaining_s + 1.0 + math.log((100.0 - target_pct) / a_pct)
    if d <= 1.0:
        return limit_w
    w = 2.0 * d
    for _ in range(_NEWTON_MAX_STEPS):
        step = (w - math.log(w) - d) / (1.0 - 1.0 / w)
        w -= step
        if step <= 1e-13 * w:
            break
    u_pct = a_pct / max(w, 1.0)
    return min(limit_w, u_pct * rating_w / (100.0 - taper_pct))


# --- public API ---------------------------------------------------------------------------


def charge_limit_w(soc_pct: float, model: BatteryModel) -> float:
    """AC charge power (W, >= 0) the battery takes at ``soc_pct``: taper and ceiling.

    ``max_charge_w`` up to ``taper_soc_pct``, then linearly down to 0 at 100 % (CC-CV);
    0 at or above ``soc_max_pct``.
    """
    return _limit_w(soc_pct, model, model.max_charge_w)


def soc_after(soc_pct: float, power_w: float, duration_s: float, model: BatteryModel) -> float:
    """SoC (%) after holding AC ``power_w`` (+ charge, - discharge) for ``duration_s``.

    Applies the efficiency, the ratings, the taper (the power is limited by
    :func:`charge_limit_w` as SoC rises) and the stop points (charge stops at
    ``soc_max_pct``, discharge at ``soc_min_pct``; a SoC already beyond a stop point does
    not move in that direction).
    """
    if duration_s < 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    if power_w > 0.0:
        return _soc_after_charge(soc_pct, power_w, duration_s, model, model.max_charge_w)
    return _soc_after_discharge(soc_pct, power_w, duration_s, model, model.max_discharge_w)


def time_to_soc_s(soc_pct: float, target_pct: float, model: BatteryModel) -> float:
    """Seconds to charge from ``soc_pct`` to ``target_pct`` at full (tapered) power.

    0 if already there; ``math.inf`` if unreachable (target above ``soc_max_pct``,
    ``max_charge_w == 0``, or 100 % through a taper). The inverse of :func:`soc_after` at
    ``max_charge_w``.
    """
    return _time_to_soc(soc_pct, target_pct, model, model.max_charge_w)


def forecast(
    now_ms: int,
    soc_pct: float,
    setpoint_w: float,
    model: BatteryModel,
    goal: ChargingGoal,
    *,
    derate: float = 1.0,
    horizon_s: float = 900.0,
) -> ForecastResult:
    """SoC forecast and flexibility envelope from a reading at ``now_ms`` (UTC epoch ms).

    ``setpoint_w`` (+ charge, - discharge) is the AC power assumed held until departure;
    ``derate`` (0..1) scales both ratings; ``horizon_s`` is how long a dispatch at
    ``max_discharge_w`` may last without endangering the departure need. See the module
    docstring for each field.
    """
    if not 0.0 <= derate <= 1.0:
        raise ValueError(f"derate must be in [0, 1], got {derate}")
    if not horizon_s > 0.0:
        raise ValueError(f"horizon_s must be > 0, got {horizon_s}")
    if not 0.0 <= soc_pct <= 100.0:
        raise ValueError(f"soc_pct must be in [0, 100], got {soc_pct}")
    charge_rating_w = model.max_charge_w * derate
    discharge_rating_w = model.max_discharge_w * derate
    max_charge_w = _limit_w(soc_pct, model, charge_rating_w)

    remaining_s: float | None = None
    soc_at_departure_pct: float | None = None
    if goal.departure_ms is not None:
        remaining_s = max(0.0, (goal.departure_ms - now_ms) / 1000.0)
        if setpoint_w > 0.0:
            soc_at_departure_pct = _soc_after_charge(
                soc_pct, setpoint_w, remaining_s, model, charge_rating_w
            )
        else:
            soc_at_departure_pct = _soc_after_discharge(
                soc_pct, setpoint_w, remaining_s, model, discharge_rating_w
            )

    earliest_target_ms: int | None = None
    energy_to_target_wh: float | None = None
    must_charge_w = 0.0
    lowest_pct = model.soc_min_pct
    if goal.target_soc_pct is not None:
        target_pct = min(goal.target_soc_pct, model.soc_max_pct)
        energy_to_target_wh = max(0.0, target_pct - soc_pct) * model.capacity_wh / 100.0
        to_target_s = _time_to_soc(soc_pct, target_pct, model, charge_rating_w)
        if not math.isinf(to_target_s):
            earliest_target_ms = now_ms + math.ceil(to_target_s * 1000.0)
        if remaining_s is not None:
            if target_pct > soc_pct:
                must_charge_w = _must_charge(
                    soc_pct, target_pct, remaining_s, model, charge_rating_w
                )
            charge_s = remaining_s - horizon_s
            lowest_pct = max(lowest_pct, _soc_before(target_pct, charge_s, model, charge_rating_w))

    discharge_energy_wh = 0.0
    if model.max_discharge_w > 0.0 and soc_pct > lowest_pct:
        discharge_energy_wh = (soc_pct - lowest_pct) * model.capacity_wh / 100.0
    max_discharge_w = 0.0
    if discharge_energy_wh > 0.0 and discharge_rating_w > 0.0:
        max_discharge_w = min(
            discharge_rating_w,
            discharge_energy_wh * _S_PER_H * model.efficiency / horizon_s,
        )
    return ForecastResult(
        soc_at_departure_pct=soc_at_departure_pct,
        earliest_target_ms=earliest_target_ms,
        energy_to_target_wh=energy_to_target_wh,
        max_charge_w=max_charge_w,
        max_discharge_w=max_discharge_w,
        discharge_energy_wh=discharge_energy_wh,
        must_charge_w=must_charge_w,
    )
