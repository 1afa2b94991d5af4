"""Per-asset state of the dataflow: charging needs, SoC forecast and flexibility envelope.

:func:`track` is the mapper of the dataflow step ``asset_state`` (keyed by asset): it takes
one valid reading and the asset's :class:`AssetTracker` state, and returns the
:class:`~pipelines.fleet.AssetUpdate` the dispatcher decides on, plus a
:class:`~gridflex.contract.Forecast` at most every ``forecast_interval_ms``. Pure: no I/O.

Where the numbers come from:

* ratings, SoC stop-points, capacity (inverters) and the base setpoint: the site file;
* a car's needs (departure, target, energy, its own power limits, V2X): the latest
  ``ev`` object of its transaction (OCPP ``NotifyEVChargingNeeds``, ISO 15118); a car that
  states none gets the site's ``[dispatch.ev_defaults]`` (capacity, target SoC, a departure
  ``dwell_h`` after it was first seen) and is charge-only, since nothing says it may
  discharge;
* a car's capacity: ``requested_energy_wh / (target - SoC)`` when the car states both,
  else the default;
* thermal derating: an EVSE's connector temperature, linearly from 1 at
  :data:`DERATE_START_C` to 0 at :data:`DERATE_STOP_C` (as IEC 61851 chargers derate);
* the SoC forecast and envelope: :func:`pipelines.forecast.forecast`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from gridflex.contract import EvChargingNeeds, Forecast
from gridflex.derating import DERATE_START_C, DERATE_STOP_C, derate_factor
from pipelines.dispatch import DroopParams
from pipelines.fleet import AssetUpdate
from pipelines.forecast import BatteryModel, ChargingGoal, ForecastResult, forecast
from pipelines.reading import ReadingLike
from pipelines.validate import RegisterState

__all__ = [
    "DERATE_START_C",
    "DERATE_STOP_C",
    "AssetProfile",
    "AssetTracker",
    "CarDefaults",
    "derate_factor",
    "track",
]

#: Telemetry statuses (the contract's vocabulary) of an EVSE with a car drawing or paused.
CAR_STATUSES: Final = frozenset({"charging", "discharging", "suspended"})


@dataclass(frozen=True, slots=True)
class AssetProfile:
    """One asset of the site file, as the dataflow needs it."""

    asset: str
    kind: Literal["inverter", "evse"]
    max_charge_w: float
    max_discharge_w: float
    capacity_wh: float | None
    soc_min_pct: float
    soc_max_pct: float
    base_w: float
    droop: DroopParams


@dataclass(frozen=True, slots=True)
class CarDefaults:
    """The site's assumptions for a car without stated needs, and the battery model's constants."""

    capacity_wh: float = 60_000.0
    target_soc_pct: float = 80.0
    dwell_ms: int = 8 * 3_600_000
    efficiency: float = 0.92
    taper_soc_pct: float = 80.0


@dataclass
class AssetTracker:
    """What the ``asset_state`` step remembers of one asset (picklable for recovery).

    ``registers`` is the state of :func:`~pipelines.validate.check_registers`, which the
    same step applies (:mod:`pipelines.asset_step`); :func:`track` leaves it alone.
    """

    transaction_id: str | None = None
    needs: EvChargingNeeds | None = None
    plugged_ms: int | None = None
    soc_pct: float | None = None
    last_forecast_ms: int | None = None
    registers: RegisterState | None = None

    def __reduce__(self) -> tuple[type[AssetTracker], tuple[object, ...]]:
        """Copy and pickle as one flat tuple (a recovery snapshot copies every asset's).

        A snapshot of an older version (five fields, no ``registers``) loads with
        ``registers`` None: the first reading after the upgrade is not compared.
        """
        return (
            AssetTracker,
            (
                self.transaction_id,
                self.needs,
                self.plugged_ms,
                self.soc_pct,
                self.last_forecast_ms,
                self.registers,
            ),
        )


def _car_capacity_wh(needs: EvChargingNeeds | None, soc_pct: float, default_wh: float) -> float:
    if needs is None or needs.requested_energy_wh is None or needs.target_soc_pct is None:
        return default_wh
    span = needs.target_soc_pct - soc_pct
    if span < 1.0 or needs.requested_energy_wh <= 0:
        return default_wh
    return needs.requested_energy_wh * 100.0 / span


def _update_needs(state: AssetTracker, t: ReadingLike) -> None:
    if t.transaction_id != state.transaction_id:
        state.transaction_id = t.transaction_id
        state.needs = None
        state.plugged_ms = t.ts_ms if t.transaction_id is not None else None
    if t.ev is not None:
        state.needs = t.ev
    if state.plugged_ms is None and t.kind == "evse" and t.transaction_id is not None:
        state.plugged_ms = t.ts_ms


def track(
    state: AssetTracker | None,
    telemetry: ReadingLike,
    *,
    received_ms: int,
    profile: AssetProfile | None,
    defaults: CarDefaults,
    forecast_interval_ms: int,
) -> tuple[AssetTracker, AssetUpdate, Forecast | None]:
    """Fold one reading into the asset's state; return its update and maybe a forecast.

    An asset that is not in the site file (``profile`` None) is tracked but not
    dispatchable. Without a known SoC nothing is discharged (the stop-points cannot be
    checked) and no forecast is published.
    """
    state = state or AssetTracker()
    t = telemetry
    _update_needs(state, t)
    if t.soc_pct is not None:
        state.soc_pct = t.soc_pct
    faulted = t.status == "fault"
    derate = derate_factor(t.temp_c) if t.kind == "evse" else 1.0
    droop = profile.droop if profile is not None else DroopParams()
    if profile is None:
        update = AssetUpdate(
            t.asset, t.ts_ms, t.seq, t.boot, received_ms, t.freq_hz, t.power_w, 0.0, 0.0, 0.0,
            0.0, 0.0, droop, faulted=faulted, dispatchable=False,
        )  # fmt: skip
        return state, update, None

    is_car = t.kind == "evse"
    car_present = not is_car or t.transaction_id is not None or t.status in CAR_STATUSES
    rated_charge, rated_discharge = _ratings(profile, state.needs if is_car else None, is_car)
    soc = state.soc_pct
    fc: Forecast | None = None
    if not car_present:
        low = high = 0.0
    elif soc is None:
        low, high = 0.0, rated_charge * derate
    else:
        model = _battery_model(
            profile,
            state.needs,
            soc_pct=soc,
            rated_charge_w=rated_charge,
            rated_discharge_w=rated_discharge,
            defaults=defaults,
        )
        goal, source = _goal(state, t, defaults) if is_car else (BATTERY_GOAL, "battery")
        setpoint = t.setpoint_w if t.setpoint_w is not None else t.power_w
        result = forecast(t.ts_ms, soc, setpoint, model, goal, derate=derate)
        high = result.max_charge_w
        low = -result.max_discharge_w if result.max_discharge_w > 0 else result.must_charge_w
        low = min(low, high)
        due = (
            state.last_forecast_ms is None
            or t.ts_ms - state.last_forecast_ms >= forecast_interval_ms
        )
        if due and (is_car or profile.capacity_wh is not None):
            state.last_forecast_ms = t.ts_ms
            fc = _forecast_payload(
                t,
                result,
                soc_pct=soc,
                setpoint_w=setpoint,
                model=model,
                goal=goal,
                v2x=rated_discharge > 0,
                source=source,
            )
    update = AssetUpdate(
        asset=t.asset,
        ts_ms=t.ts_ms,
        seq=t.seq,
        boot=t.boot,
        received_ms=received_ms,
        freq_hz=t.freq_hz,
        power_w=t.power_w,
        base_w=profile.base_w if car_present else 0.0,
        min_w=low,
        max_w=high,
        rated_charge_w=rated_charge * derate,
        rated_discharge_w=rated_discharge * derate,
        droop=droop,
        faulted=faulted,
    )
    return state, update, fc


#: A stationary battery has no departure and no target.
BATTERY_GOAL: Final = ChargingGoal(departure_ms=None, target_soc_pct=None)

NeedsSource = Literal["ev", "site_default", "battery"]


def _ratings(
    profile: AssetProfile, needs: EvChargingNeeds | None, is_car: bool
) -> tuple[float, float]:
    """Charge and discharge ratings now: the site file's, within a car's own limits.

    A car discharges only when it says it can (ISO 15118-20 V2X); a car without stated
    needs is charge-only.
    """
    charge, discharge = profile.max_charge_w, profile.max_discharge_w
    if not is_car:
        return charge, discharge
    if needs is not None and needs.max_charge_w is not None:
        charge = min(charge, needs.max_charge_w)
    if needs is None or not needs.v2x:
        return charge, 0.0
    if needs.max_discharge_w is not None:
        discharge = min(discharge, needs.max_discharge_w)
    return charge, discharge


def _battery_model(
    profile: AssetProfile,
    needs: EvChargingNeeds | None,
    *,
    soc_pct: float,
    rated_charge_w: float,
    rated_discharge_w: float,
    defaults: CarDefaults,
) -> BatteryModel:
    """The battery behind the asset: capacity, ratings, stop-points, efficiency, taper."""
    soc_min = profile.soc_min_pct
    if profile.kind == "evse":
        if needs is not None and needs.min_soc_pct is not None:
            soc_min = max(soc_min, needs.min_soc_pct)
        capacity = _car_capacity_wh(needs, soc_pct, defaults.capacity_wh)
    else:
        capacity = profile.capacity_wh or defaults.capacity_wh
    return BatteryModel(
        capacity_wh=capacity,
        max_charge_w=rated_charge_w,
        max_discharge_w=rated_discharge_w,
        soc_min_pct=min(soc_min, profile.soc_max_pct - 0.1),
        soc_max_pct=profile.soc_max_pct,
        efficiency=defaults.efficiency,
        taper_soc_pct=defaults.taper_soc_pct,
    )


def _goal(
    state: AssetTracker, t: ReadingLike, defaults: CarDefaults
) -> tuple[ChargingGoal, NeedsSource]:
    """A car's departure and target: what it stated, else the site's defaults."""
    needs = state.needs
    source: NeedsSource
    if needs is not None and needs.departure_ms is not None:
        departure, source = needs.departure_ms, "ev"
    else:
        departure = (state.plugged_ms or t.ts_ms) + defaults.dwell_ms
        source = "site_default"
    target = (
        needs.target_soc_pct
        if needs is not None and needs.target_soc_pct is not None
        else defaults.target_soc_pct
    )
    return ChargingGoal(departure_ms=departure, target_soc_pct=target), source


def _forecast_payload(
    t: ReadingLike,
    result: ForecastResult,
    *,
    soc_pct: float,
    setpoint_w: float,
    model: BatteryModel,
    goal: ChargingGoal,
    v2x: bool,
    source: NeedsSource,
) -> Forecast:
    """The ``forecast/1`` message of one reading."""
    return Forecast(
        site=t.site,
        asset=t.asset,
        kind=t.kind,
        ts_ms=t.ts_ms,
        seq=t.seq,
        soc_pct=soc_pct,
        capacity_wh=round(model.capacity_wh, 1),
        power_w=t.power_w,
        setpoint_w=setpoint_w,
        departure_ms=goal.departure_ms,
        target_soc_pct=goal.target_soc_pct,
        soc_at_departure_pct=_round(result.soc_at_departure_pct, 2),
        earliest_target_ms=result.earliest_target_ms,
        energy_to_target_wh=_round(result.energy_to_target_wh, 1),
        max_charge_w=round(result.max_charge_w, 1),
        max_discharge_w=round(result.max_discharge_w, 1),
        discharge_energy_wh=round(result.discharge_energy_wh, 1),
        must_charge_w=round(result.must_charge_w, 1),
        v2x=v2x,
        needs_source=source,
    )


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
