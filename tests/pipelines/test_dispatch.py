"""Golden tables for the dispatch laws: IEEE 1547 droop, FCR request, fleet allocation, ids."""

from __future__ import annotations

import pytest
from numpy.testing import assert_allclose

from pipelines.dispatch import (
    DroopParams,
    Participant,
    allocate,
    command_id,
    droop_delta_w,
    fcr_request_w,
)

IEEE = DroopParams()  # db 0.036 Hz, k 0.05


# f, nominal, rated charge, rated discharge -> ΔP (W, + charge)
DROOP_TABLE = [
    # the example: (49.80 - 49.964) / (0.05 * 50) * 10000 = -656
    (49.80, 50, 10_000, 10_000, -656.0),
    # mirror image above: (50.20 - 50.036) / 2.5 * 8000 (charge rating) = +524.8
    (50.20, 50, 8_000, 10_000, 524.8),
    # inside the dead band: nothing
    (49.98, 50, 10_000, 10_000, 0.0),
    (50.03, 50, 10_000, 10_000, 0.0),
    # exactly at the dead-band edges: nothing
    (49.964, 50, 10_000, 10_000, 0.0),
    (50.036, 50, 10_000, 10_000, 0.0),
    # 60 Hz: (59.90 - 59.964) / (0.05 * 60) * 6000 = -128
    (59.90, 60, 6_000, 6_000, -128.0),
    # clipped at the rating: (47.0 - 49.964) / 2.5 * 10000 = -11856 -> -10000
    (47.0, 50, 10_000, 10_000, -10_000.0),
    (53.0, 50, 7_000, 10_000, 7_000.0),
    # charge-only asset (no discharge rating) gives nothing below nominal
    (49.5, 50, 11_000, 0, 0.0),
]


@pytest.mark.parametrize(("freq", "nominal", "charge", "discharge", "expected"), DROOP_TABLE)
def test_droop_follows_ieee_1547_in_both_directions(
    freq: float, nominal: float, charge: float, discharge: float, expected: float
) -> None:
    delta = droop_delta_w(freq, nominal, IEEE, rated_charge_w=charge, rated_discharge_w=discharge)
    assert_allclose(delta, expected, atol=1e-6)
    assert f"{delta:+.0f}" != "-0"  # a charge-only asset's zero reads +0 W, not -0 W


def test_droop_uses_the_assets_own_dead_band_and_slope() -> None:
    fast = DroopParams(db_of_hz=0.017, db_uf_hz=0.017, k_of=0.02, k_uf=0.02)
    # (49.90 - 49.983) / (0.02 * 50) * 10000 = -830
    assert_allclose(
        droop_delta_w(49.90, 50, fast, rated_charge_w=1e4, rated_discharge_w=1e4), -830.0
    )


# f -> FCR request for 10 MW, dead band 10 mHz, full at 200 mHz
FCR_TABLE = [
    (50.000, 0.0),
    (49.995, 0.0),  # inside the dead band
    (49.990, 0.0),  # at its edge
    (49.800, -10_000_000.0),  # full activation, discharge
    (49.700, -10_000_000.0),  # beyond: still full
    (50.105, 5_000_000.0),  # (0.105 - 0.010) / 0.190 = 0.5, charge
    (49.895, -5_000_000.0),  # the mirror image
]


@pytest.mark.parametrize(("freq", "expected"), FCR_TABLE)
def test_fcr_request_is_linear_between_dead_band_and_full_activation(
    freq: float, expected: float
) -> None:
    assert_allclose(fcr_request_w(freq, 50, 10_000_000, 0.010, 0.200), expected, atol=1e-3)


def P(asset: str, base: float, low: float, high: float) -> Participant:
    return Participant(asset, base, low, high)


def test_allocation_sums_to_the_request_in_proportion_to_headroom() -> None:
    # headroom down: 10 kW and 5 kW -> 2/3 and 1/3 of -6 kW
    result = allocate(-6_000, [P("a", 0, -10_000, 10_000), P("b", 0, -5_000, 5_000)])
    assert_allclose([result.setpoints_w["a"], result.setpoints_w["b"]], [-4_000, -2_000])
    assert_allclose(result.allocated_w, -6_000)
    assert result.shortfall_w == 0


def test_allocation_respects_the_soc_floor_and_departure_need() -> None:
    # "floor": at its SoC floor, min 0; "car": must charge 3 kW to leave on time (min +3 kW)
    result = allocate(
        -4_000,
        [P("floor", 0, 0, 10_000), P("car", 0, 3_000, 11_000), P("free", 0, -10_000, 10_000)],
    )
    assert result.setpoints_w["floor"] == 0  # nothing below the floor
    assert result.setpoints_w["car"] == 3_000  # the departure need holds
    assert_allclose(result.setpoints_w["free"], -4_000)
    assert_allclose(result.allocated_w, -4_000)


def test_charge_only_car_never_discharges_and_takes_charge_when_asked() -> None:
    # charge-only car (min 0): down request goes to the battery only; up request is shared
    down = allocate(-2_000, [P("car", 0, 0, 11_000), P("bat", 0, -5_000, 5_000)])
    assert down.setpoints_w["car"] == 0
    up = allocate(+8_000, [P("car", 0, 0, 11_000), P("bat", 0, -5_000, 5_000)])
    # headroom up: 11 kW and 5 kW -> 8 kW * 11/16 = 5500, * 5/16 = 2500
    assert_allclose([up.setpoints_w["car"], up.setpoints_w["bat"]], [5_500, 2_500])


def test_allocation_adds_to_the_bases() -> None:
    # bases +2 kW and -1 kW; down headroom 12 kW and 4 kW -> -4 kW split 3:1
    result = allocate(-4_000, [P("a", 2_000, -10_000, 10_000), P("b", -1_000, -5_000, 5_000)])
    assert_allclose(result.setpoints_w["a"], 2_000 - 3_000)
    assert_allclose(result.setpoints_w["b"], -1_000 - 1_000)
    assert_allclose(result.base_w, 1_000)


def test_transformer_export_limit_caps_the_response_and_reports_shortfall() -> None:
    # bases 0; max export 7 kW; request -12 kW of 20 kW headroom -> 7 kW, 5 kW short
    result = allocate(
        -12_000, [P("a", 0, -10_000, 10_000), P("b", 0, -10_000, 10_000)], max_export_w=7_000
    )
    assert_allclose(result.allocated_w, -7_000)
    assert_allclose(result.shortfall_w, 5_000)
    assert_allclose(sum(result.setpoints_w.values()), -7_000)


def test_transformer_import_limit_counts_the_bases() -> None:
    # bases +6 kW; max import 10 kW -> only 4 kW more charge
    result = allocate(
        +9_000, [P("a", 3_000, 0, 11_000), P("b", 3_000, 0, 11_000)], max_import_w=10_000
    )
    assert_allclose(result.allocated_w, 4_000)
    assert_allclose(result.shortfall_w, 5_000)


def test_shortfall_when_the_fleet_is_too_small() -> None:
    result = allocate(-30_000, [P("a", 0, -10_000, 10_000), P("b", 0, -5_000, 5_000)])
    assert_allclose(result.setpoints_w["a"], -10_000)
    assert_allclose(result.setpoints_w["b"], -5_000)
    assert_allclose(result.shortfall_w, 15_000)


def test_derated_asset_gets_a_smaller_share() -> None:
    # same ratings, one derated to 50 % (its envelope is half as wide)
    result = allocate(-3_000, [P("ok", 0, -10_000, 10_000), P("hot", 0, -5_000, 5_000)])
    assert abs(result.setpoints_w["hot"]) < abs(result.setpoints_w["ok"])


def test_no_request_leaves_everyone_at_base() -> None:
    result = allocate(0.0, [P("a", 1_500, -10_000, 10_000)])
    assert result.setpoints_w == {"a": 1_500}
    assert result.allocated_w == 0


def test_command_id_depends_on_the_reading_and_the_decision_only() -> None:
    one = command_id("s", "a", boot="b", seq=7, mode="droop", setpoint_w=-656.0)
    assert one == command_id("s", "a", boot="b", seq=7, mode="droop", setpoint_w=-656.04)
    assert one != command_id("s", "a", boot="b", seq=8, mode="droop", setpoint_w=-656.0)
    assert one != command_id("s", "a", boot="b", seq=7, mode="droop", setpoint_w=-700.0)
    assert one != command_id("s", "a", boot="c", seq=7, mode="droop", setpoint_w=-656.0)
    assert one != command_id("s", "a", boot="b", seq=7, mode="fcr", setpoint_w=-656.0)
