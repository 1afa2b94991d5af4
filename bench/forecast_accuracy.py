"""Accuracy of pipelines.forecast against the simulated car (simulators/ev.py), as a table.

A seeded population of cars (capacity 40-100 kWh, arrival SoC, target, dwell 2-10 h, true
one-way efficiency 0.88-0.95, true CC-CV taper point 75-90 %, ratings 7.4/11/22 kW, default
connector heating and derating) charges under a constant setpoint: the full rating, or for
some a fixed setpoint below it. ``--lead-min`` before departure (30 by default) the forecast
is called with the site's model constants (efficiency 0.92, taper 80 %) and the connector
derating of that moment:

* ``stated needs``: the car's capacity, departure and target (ISO 15118-20 / OCPP 2.1
  NotifyEVChargingNeeds);
* ``site defaults``: a car without stated needs, ``[dispatch.ev_defaults]`` (60 kWh, target
  80 %, departure = arrival + 8 h); ``defaults, departure known``: the same with the true
  departure (what stating only a departure time buys);
* ``oracle``: stated needs and the car's true efficiency and taper (what is left is the
  derating changing after the call, and the 1 s integration of the simulator).

Its ``soc_at_departure_pct`` is compared with the simulator's SoC at the true departure
(1 s steps). The simulated cars have no battery-health ceiling, so the model's
``soc_max_pct`` is 100.

    .venv/bin/python bench/forecast_accuracy.py               # the table in docs/dispatch.md
    .venv/bin/python bench/forecast_accuracy.py --cars 100 --lead-min 120
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import timeit
from dataclasses import dataclass

from pipelines.forecast import BatteryModel, ChargingGoal, forecast
from simulators.ev import CarSpec, derating_factor, initial_state, step

SITE_EFFICIENCY = 0.92
SITE_TAPER_PCT = 80.0
DEFAULT_CAPACITY_WH = 60_000.0
DEFAULT_TARGET_PCT = 80.0
DEFAULT_DWELL_S = 8 * 3600.0
RATINGS_W = (7_400.0, 11_000.0, 22_000.0)


@dataclass(frozen=True)
class Visit:
    """One simulated car and the constant setpoint it follows."""

    car: CarSpec
    setpoint_w: float
    fixed: bool


@dataclass(frozen=True)
class Outcome:
    """The forecast per group and the simulator's truth at departure."""

    visit: Visit
    actual_pct: float
    forecast_pct: dict[str, float]


def make_visits(count: int, seed: int, fixed_fraction: float) -> list[Visit]:
    rng = random.Random(seed)
    visits = []
    for _ in range(count):
        rating_w = rng.choice(RATINGS_W)
        initial_pct = round(rng.uniform(10.0, 60.0), 1)
        fixed = rng.random() < fixed_fraction
        car = CarSpec(
            capacity_wh=round(rng.uniform(40_000.0, 100_000.0), -2),
            max_charge_w=rating_w,
            departure_s=round(rng.uniform(2.0, 10.0) * 3600.0),
            initial_soc_pct=initial_pct,
            target_soc_pct=max(initial_pct, rng.choice((70.0, 80.0, 90.0, 100.0))),
            min_soc_pct=min(initial_pct, 10.0),
            efficiency=round(rng.uniform(0.88, 0.95), 3),
            taper_soc_pct=round(rng.uniform(75.0, 90.0), 1),
        )
        setpoint_w = round(rating_w * rng.uniform(0.3, 0.8)) if fixed else rating_w
        visits.append(Visit(car, setpoint_w, fixed))
    return visits


def run_visit(visit: Visit, lead_s: float) -> Outcome:
    car = visit.car
    assert car.departure_s is not None
    state = initial_state(car)
    limits = {"station_max_charge_w": car.max_charge_w, "station_max_discharge_w": 0.0}
    forecast_at_s = max(0, round(car.departure_s - lead_s))
    for _ in range(forecast_at_s):
        state = step(state, car, visit.setpoint_w, 1.0, **limits)
    now_ms = forecast_at_s * 1000
    derate = derating_factor(state.connector_temp_c)
    departure_ms = round(car.departure_s * 1000)
    groups = {
        "stated needs": (
            BatteryModel(
                car.capacity_wh,
                car.max_charge_w,
                0.0,
                soc_max_pct=100.0,
                efficiency=SITE_EFFICIENCY,
                taper_soc_pct=SITE_TAPER_PCT,
            ),
            ChargingGoal(departure_ms, car.target_soc_pct),
        ),
        "site defaults": (
            BatteryModel(
                DEFAULT_CAPACITY_WH,
                car.max_charge_w,
                0.0,
                soc_max_pct=100.0,
                efficiency=SITE_EFFICIENCY,
                taper_soc_pct=SITE_TAPER_PCT,
            ),
            ChargingGoal(round(DEFAULT_DWELL_S * 1000), DEFAULT_TARGET_PCT),
        ),
        "defaults, departure known": (
            BatteryModel(
                DEFAULT_CAPACITY_WH,
                car.max_charge_w,
                0.0,
                soc_max_pct=100.0,
                efficiency=SITE_EFFICIENCY,
                taper_soc_pct=SITE_TAPER_PCT,
            ),
            ChargingGoal(departure_ms, DEFAULT_TARGET_PCT),
        ),
        "oracle": (
            BatteryModel(
                car.capacity_wh,
                car.max_charge_w,
                0.0,
                soc_max_pct=100.0,
                efficiency=car.efficiency,
                taper_soc_pct=car.taper_soc_pct,
            ),
            ChargingGoal(departure_ms, car.target_soc_pct),
        ),
    }
    predicted = {}
    for name, (model, goal) in groups.items():
        result = forecast(now_ms, state.soc_pct, visit.setpoint_w, model, goal, derate=derate)
        assert result.soc_at_departure_pct is not None
        predicted[name] = result.soc_at_departure_pct
    for _ in range(round(car.departure_s) - forecast_at_s):
        state = step(state, car, visit.setpoint_w, 1.0, **limits)
    return Outcome(visit, state.soc_pct, predicted)


def row(label: str, errors: list[float]) -> str:
    magnitudes = sorted(abs(e) for e in errors)
    p95 = magnitudes[min(len(magnitudes) - 1, round(0.95 * (len(magnitudes) - 1)))]
    return (
        f"| {label} | {len(errors)} | {statistics.fmean(magnitudes):.3f} | {p95:.3f} "
        f"| {magnitudes[-1]:.3f} | {statistics.fmean(errors):+.3f} |"
    )


def call_cost_us() -> float:
    model = BatteryModel(60_000.0, 11_000.0, 7_000.0)
    goal = ChargingGoal(5_400_000, 89.0)
    calls = 200_000
    total_s = timeit.timeit(
        lambda: forecast(0, 72.0, 3_000.0, model, goal, derate=0.9), number=calls
    )
    return total_s / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cars", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--lead-min", type=float, default=30.0)
    parser.add_argument("--fixed-fraction", type=float, default=0.3)
    args = parser.parse_args()

    started = time.perf_counter()
    visits = make_visits(args.cars, args.seed, args.fixed_fraction)
    outcomes = [run_visit(v, args.lead_min * 60.0) for v in visits]
    elapsed_s = time.perf_counter() - started

    print(
        f"Forecast of the SoC at departure {args.lead_min:g} min ahead vs the simulator, "
        f"{args.cars} cars, seed {args.seed}; error = forecast - actual in SoC percentage "
        "points\n"
    )
    print("| needs, setpoint | cars | mean abs | p95 abs | max abs | bias |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for group in (
        "stated needs",
        "site defaults",
        "defaults, departure known",
        "oracle",
    ):
        for label, keep in (
            ("all", lambda o: True),
            ("full rating", lambda o: not o.visit.fixed),
            ("fixed setpoint", lambda o: o.visit.fixed),
        ):
            errors = [o.forecast_pct[group] - o.actual_pct for o in outcomes if keep(o)]
            if errors:
                print(row(f"{group}, {label}", errors))
    print(f"\nforecast() per call: {call_cost_us():.1f} us (timeit); simulation {elapsed_s:.0f} s")


if __name__ == "__main__":
    main()
