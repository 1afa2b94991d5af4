"""A parked electric car behind a charger: battery, power limits, connector heat. Pure functions.

The model is deliberately simple and deterministic (one step per call, no I/O):

- State of charge integrates the battery-side power: ``dSoC/dt = 100 * P_bat / 3600 /
  capacity_wh`` (%/s with P in W and capacity in Wh), where the one-way ``efficiency`` gives
  ``P_bat = P * efficiency`` when charging and ``P / efficiency`` when discharging. The meter
  registers count the AC energy ``P * dt``. The default efficiency 1.0 is lossless.
- Power follows the requested value within the car's and the station's limits: never above
  100 % SoC, never discharging below the car's V2X floor ``min_soc_pct``, no discharge at all
  for a charge-only (ISO 15118-2) car. Above ``taper_soc_pct`` the charge limit falls linearly
  to 0 at 100 % (constant-current/constant-voltage taper); the default 100 % means no taper.
- The connector temperature is a first-order lag towards ``ambient + rise * |P|`` (plus a
  fault offset for the over-temperature injection); above ``derate_start_c`` the allowed power
  falls linearly to 0 at ``derate_stop_c`` (thermal derating, as IEC 61851-1 chargers do).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

__all__ = [
    "CarSpec",
    "EvState",
    "ThermalSpec",
    "allowed_power_w",
    "derating_factor",
    "initial_state",
    "make_cars",
    "step",
]


@dataclass(frozen=True)
class CarSpec:
    """One car's visit and battery. Times are seconds after the simulation starts."""

    capacity_wh: float = 60_000.0
    max_charge_w: float = 11_000.0
    max_discharge_w: float = 0.0
    v2x: bool = False
    arrival_s: float = 0.0
    departure_s: float | None = None
    initial_soc_pct: float = 40.0
    target_soc_pct: float = 80.0
    min_soc_pct: float = 20.0
    efficiency: float = 1.0
    taper_soc_pct: float = 100.0

    def __post_init__(self) -> None:
        if self.capacity_wh <= 0:
            raise ValueError("capacity_wh must be > 0")
        if not 0 <= self.min_soc_pct <= self.target_soc_pct <= 100:
            raise ValueError("expected 0 <= min_soc_pct <= target_soc_pct <= 100")
        if self.departure_s is not None and self.departure_s <= self.arrival_s:
            raise ValueError("departure_s must be after arrival_s")
        if not 0 < self.efficiency <= 1:
            raise ValueError("efficiency must be in (0, 1]")
        if not 0 <= self.taper_soc_pct <= 100:
            raise ValueError("taper_soc_pct must be in [0, 100]")


@dataclass(frozen=True)
class ThermalSpec:
    """Connector heating and the derating it triggers."""

    ambient_c: float = 25.0
    rise_c_per_kw: float = 2.5
    tau_s: float = 30.0
    derate_start_c: float = 70.0
    derate_stop_c: float = 90.0


@dataclass(frozen=True)
class EvState:
    """The car and the station's meter at one instant."""

    soc_pct: float
    power_w: float = 0.0
    connector_temp_c: float = 25.0
    energy_import_wh: float = 0.0
    energy_export_wh: float = 0.0


def initial_state(car: CarSpec, thermal: ThermalSpec = ThermalSpec()) -> EvState:
    """The state when the car plugs in."""
    return EvState(soc_pct=car.initial_soc_pct, connector_temp_c=thermal.ambient_c)


def derating_factor(temp_c: float, thermal: ThermalSpec = ThermalSpec()) -> float:
    """Share of the rated power allowed at a connector temperature: 1 below start, 0 at stop."""
    if temp_c <= thermal.derate_start_c:
        return 1.0
    if temp_c >= thermal.derate_stop_c:
        return 0.0
    return (thermal.derate_stop_c - temp_c) / (thermal.derate_stop_c - thermal.derate_start_c)


def allowed_power_w(
    car: CarSpec,
    soc_pct: float,
    temp_c: float,
    *,
    station_max_charge_w: float,
    station_max_discharge_w: float,
    thermal: ThermalSpec = ThermalSpec(),
) -> tuple[float, float]:
    """The power range ``(lowest, highest)`` in W (+ charging) the car can take right now."""
    factor = derating_factor(temp_c, thermal)
    highest = 0.0
    if soc_pct < 100.0:
        highest = min(car.max_charge_w, station_max_charge_w) * factor
        if soc_pct > car.taper_soc_pct:
            highest *= (100.0 - soc_pct) / (100.0 - car.taper_soc_pct)
    lowest = 0.0
    if car.v2x and soc_pct > car.min_soc_pct:
        lowest = -min(car.max_discharge_w, station_max_discharge_w) * factor
    return lowest, highest


def step(
    state: EvState,
    car: CarSpec,
    requested_w: float,
    dt_s: float,
    *,
    station_max_charge_w: float,
    station_max_discharge_w: float,
    heat_offset_c: float = 0.0,
    thermal: ThermalSpec = ThermalSpec(),
) -> EvState:
    """Advance ``dt_s`` seconds with the car following ``requested_w`` within its limits.

    The connector temperature moves first (it depends on the power of the last step), then the
    power is clamped to the range allowed at the new temperature and SoC, then SoC and the
    meter registers integrate that power over ``dt_s``.
    """
    if dt_s < 0:
        raise ValueError("dt_s must be >= 0")
    steady_c = thermal.ambient_c + thermal.rise_c_per_kw * abs(state.power_w) / 1000 + heat_offset_c
    alpha = 1.0 - math.exp(-dt_s / thermal.tau_s) if thermal.tau_s > 0 else 1.0
    temp_c = state.connector_temp_c + (steady_c - state.connector_temp_c) * alpha
    lowest, highest = allowed_power_w(
        car,
        state.soc_pct,
        temp_c,
        station_max_charge_w=station_max_charge_w,
        station_max_discharge_w=station_max_discharge_w,
        thermal=thermal,
    )
    power_w = min(highest, max(lowest, requested_w))
    energy_wh = power_w * dt_s / 3600.0  # AC, at the meter
    # Battery side, stopping exactly at 100 % or at the V2X floor within the step.
    if power_w > 0:
        battery_wh = min(
            energy_wh * car.efficiency, (100.0 - state.soc_pct) * car.capacity_wh / 100.0
        )
        energy_wh = battery_wh / car.efficiency
    elif power_w < 0:
        floor_pct = min(car.min_soc_pct, state.soc_pct)
        battery_wh = max(
            energy_wh / car.efficiency, (floor_pct - state.soc_pct) * car.capacity_wh / 100.0
        )
        energy_wh = battery_wh * car.efficiency
    else:
        battery_wh = 0.0
    soc_pct = min(100.0, max(0.0, state.soc_pct + 100.0 * battery_wh / car.capacity_wh))
    return replace(
        state,
        soc_pct=soc_pct,
        power_w=power_w,
        connector_temp_c=temp_c,
        energy_import_wh=state.energy_import_wh + max(0.0, energy_wh),
        energy_export_wh=state.energy_export_wh + max(0.0, -energy_wh),
    )


def make_cars(
    count: int,
    *,
    seed: int = 1,
    v2x_fraction: float = 0.5,
    arrival_window_s: float = 0.0,
    stay_s: float | None = None,
) -> list[CarSpec]:
    """A seeded, mixed fleet of cars: the same arguments always give the same cars.

    Exactly ``round(count * v2x_fraction)`` cars are V2X-capable (ISO 15118-20), the rest
    charge-only (ISO 15118-2); which ones is shuffled by the seed. Arrival is uniform in
    ``[0, arrival_window_s]``; with ``stay_s`` each car leaves 0.5-1.5 times that later.
    """
    if not 0.0 <= v2x_fraction <= 1.0:
        raise ValueError("v2x_fraction must be in [0, 1]")
    rng = random.Random(seed)
    v2x_count = round(count * v2x_fraction)
    flags = [True] * v2x_count + [False] * (count - v2x_count)
    rng.shuffle(flags)
    cars = []
    for v2x in flags:
        capacity_wh = rng.choice((40_000.0, 60_000.0, 77_000.0, 100_000.0))
        max_charge_w = rng.choice((7_400.0, 11_000.0, 22_000.0))
        arrival_s = rng.uniform(0.0, arrival_window_s) if arrival_window_s > 0 else 0.0
        departure_s = arrival_s + stay_s * rng.uniform(0.5, 1.5) if stay_s else None
        initial_soc_pct = round(rng.uniform(20.0, 70.0), 1)
        cars.append(
            CarSpec(
                capacity_wh=capacity_wh,
                max_charge_w=max_charge_w,
                max_discharge_w=min(max_charge_w, 11_000.0) if v2x else 0.0,
                v2x=v2x,
                arrival_s=arrival_s,
                departure_s=departure_s,
                initial_soc_pct=initial_soc_pct,
                target_soc_pct=max(initial_soc_pct, rng.choice((80.0, 90.0, 100.0))),
                min_soc_pct=min(initial_soc_pct, rng.choice((20.0, 30.0))),
            )
        )
    return cars
