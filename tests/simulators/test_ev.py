"""The car/battery model: SoC integration, limits, thermal derating, seeded fleets."""

from __future__ import annotations

import pytest

from simulators.ev import (
    CarSpec,
    EvState,
    ThermalSpec,
    allowed_power_w,
    derating_factor,
    initial_state,
    make_cars,
    step,
)

V2X_CAR = CarSpec(capacity_wh=60_000, max_charge_w=11_000, max_discharge_w=7_000, v2x=True)
CHARGE_ONLY = CarSpec(capacity_wh=60_000, max_charge_w=11_000, v2x=False)
STATION = {"station_max_charge_w": 22_000.0, "station_max_discharge_w": 10_000.0}
NO_HEAT = ThermalSpec(rise_c_per_kw=0.0)


@pytest.mark.parametrize(
    ("temp_c", "factor"),
    [
        (25.0, 1.0),
        (70.0, 1.0),  # derating starts above 70 degC
        (75.0, 0.75),
        (80.0, 0.5),
        (90.0, 0.0),  # and reaches 0 W at 90 degC
        (120.0, 0.0),
    ],
)
def test_derating_factor_is_linear_between_start_and_stop(temp_c: float, factor: float) -> None:
    assert derating_factor(temp_c) == pytest.approx(factor)


def test_charge_only_car_cannot_discharge() -> None:
    assert allowed_power_w(CHARGE_ONLY, 50, 25, **STATION) == (0.0, 11_000)


def test_v2x_car_discharges_down_to_its_floor_only() -> None:
    assert allowed_power_w(V2X_CAR, 50, 25, **STATION) == (-7_000, 11_000)
    assert allowed_power_w(V2X_CAR, V2X_CAR.min_soc_pct, 25, **STATION)[0] == 0.0


def test_station_limits_cap_the_car() -> None:
    lowest, highest = allowed_power_w(
        V2X_CAR, 50, 25, station_max_charge_w=7_400, station_max_discharge_w=3_000
    )
    assert (lowest, highest) == (-3_000, 7_400)


def test_full_battery_takes_no_charge() -> None:
    assert allowed_power_w(V2X_CAR, 100, 25, **STATION)[1] == 0.0


def test_one_hour_at_6kw_adds_ten_percent_of_60kwh() -> None:
    state = EvState(soc_pct=40.0, connector_temp_c=25.0)
    after = step(state, V2X_CAR, 6_000, 3_600, thermal=NO_HEAT, **STATION)
    assert after.power_w == 6_000
    assert after.soc_pct == pytest.approx(50.0)
    assert after.energy_import_wh == pytest.approx(6_000)
    assert after.energy_export_wh == 0.0


def test_discharge_fills_the_export_register_and_lowers_soc() -> None:
    state = EvState(soc_pct=50.0, energy_import_wh=1_000.0)
    after = step(state, V2X_CAR, -5_000, 360, thermal=NO_HEAT, **STATION)
    assert after.power_w == -5_000
    assert after.soc_pct == pytest.approx(50.0 - 500 / 600)
    assert after.energy_export_wh == pytest.approx(500)
    assert after.energy_import_wh == 1_000.0  # registers only grow


def test_request_beyond_the_limits_is_clamped() -> None:
    state = EvState(soc_pct=50.0)
    assert step(state, V2X_CAR, -20_000, 1, **STATION).power_w == -7_000
    assert step(state, CHARGE_ONLY, -5_000, 1, **STATION).power_w == 0.0
    assert step(state, CHARGE_ONLY, 50_000, 1, **STATION).power_w == 11_000


def test_soc_stops_exactly_at_100_and_at_the_floor() -> None:
    nearly_full = EvState(soc_pct=99.9)
    assert step(nearly_full, V2X_CAR, 11_000, 3_600, **STATION).soc_pct == 100.0
    near_floor = EvState(soc_pct=V2X_CAR.min_soc_pct + 0.1)
    drained = step(near_floor, V2X_CAR, -7_000, 3_600, **STATION)
    assert drained.soc_pct == pytest.approx(V2X_CAR.min_soc_pct)
    assert drained.energy_export_wh == pytest.approx(0.1 / 100 * 60_000)


def test_over_temperature_derates_the_power() -> None:
    thermal = ThermalSpec(ambient_c=25, rise_c_per_kw=0, tau_s=1e-9)
    state = EvState(soc_pct=50.0, connector_temp_c=25.0)
    hot = step(state, V2X_CAR, 11_000, 1, heat_offset_c=55, thermal=thermal, **STATION)
    assert hot.connector_temp_c == pytest.approx(80)
    assert hot.power_w == pytest.approx(5_500)  # half of 11 kW at 80 degC


def test_connector_temperature_approaches_its_steady_state() -> None:
    thermal = ThermalSpec(ambient_c=25, rise_c_per_kw=2, tau_s=30)
    state = EvState(soc_pct=50.0, power_w=10_000, connector_temp_c=25.0)
    after = step(state, V2X_CAR, 10_000, 30, thermal=thermal, **STATION)
    # one time constant: 63 % of the way from 25 to 45 degC
    assert after.connector_temp_c == pytest.approx(25 + 20 * (1 - 0.36788), abs=0.01)


def test_negative_time_step_is_refused() -> None:
    with pytest.raises(ValueError):
        step(EvState(soc_pct=50), V2X_CAR, 0, -1, **STATION)


def test_initial_state_starts_at_the_cars_soc_and_ambient() -> None:
    state = initial_state(CarSpec(initial_soc_pct=33), ThermalSpec(ambient_c=12))
    assert (state.soc_pct, state.connector_temp_c, state.power_w) == (33, 12, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"capacity_wh": 0},
        {"min_soc_pct": 50, "target_soc_pct": 40},
        {"arrival_s": 10, "departure_s": 5},
    ],
)
def test_car_spec_refuses_impossible_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CarSpec(**kwargs)  # type: ignore[arg-type]


def test_make_cars_is_seeded_and_has_the_exact_v2x_share() -> None:
    first = make_cars(20, seed=7, v2x_fraction=0.25, arrival_window_s=60, stay_s=3600)
    again = make_cars(20, seed=7, v2x_fraction=0.25, arrival_window_s=60, stay_s=3600)
    other = make_cars(20, seed=8, v2x_fraction=0.25, arrival_window_s=60, stay_s=3600)
    assert first == again
    assert first != other
    assert sum(car.v2x for car in first) == 5
    assert all(car.max_discharge_w == 0 for car in first if not car.v2x)
    assert all(0 <= car.arrival_s <= 60 for car in first)
    assert all(car.departure_s is not None and car.departure_s > car.arrival_s for car in first)


LOSSY_TAPER = CarSpec(
    capacity_wh=60_000,
    max_charge_w=11_000,
    max_discharge_w=7_000,
    v2x=True,
    efficiency=0.9,
    taper_soc_pct=80.0,
)


@pytest.mark.parametrize(
    ("soc_pct", "highest_w"),
    [
        (50.0, 11_000),
        (80.0, 11_000),  # taper starts above 80 %
        (90.0, 5_500),  # halfway to 100 %: half the rating
        (99.0, 550),
    ],
)
def test_charge_limit_tapers_above_the_taper_point(soc_pct: float, highest_w: float) -> None:
    assert allowed_power_w(LOSSY_TAPER, soc_pct, 25, **STATION)[1] == pytest.approx(highest_w)


def test_efficiency_loses_energy_both_ways_but_the_meter_counts_ac() -> None:
    state = EvState(soc_pct=40.0)
    charged = step(state, LOSSY_TAPER, 6_000, 3_600, thermal=NO_HEAT, **STATION)
    assert charged.soc_pct == pytest.approx(40.0 + 100 * 5_400 / 60_000)  # 6 kWh x 0.9
    assert charged.energy_import_wh == pytest.approx(6_000)
    discharged = step(state, LOSSY_TAPER, -4_500, 3_600, thermal=NO_HEAT, **STATION)
    assert discharged.soc_pct == pytest.approx(40.0 - 100 * 5_000 / 60_000)  # 4.5 kWh / 0.9
    assert discharged.energy_export_wh == pytest.approx(4_500)


def test_lossy_charge_stops_at_full_and_meters_only_what_went_in() -> None:
    state = EvState(soc_pct=99.99)
    after = step(state, CarSpec(efficiency=0.9), 11_000, 3_600, thermal=NO_HEAT, **STATION)
    assert after.soc_pct == pytest.approx(100.0)
    assert after.energy_import_wh == pytest.approx(0.01 * 600 / 0.9)


def test_defaults_are_lossless_without_taper() -> None:
    assert CarSpec().efficiency == 1.0
    assert CarSpec().taper_soc_pct == 100.0
    with pytest.raises(ValueError, match="efficiency"):
        CarSpec(efficiency=0.0)
