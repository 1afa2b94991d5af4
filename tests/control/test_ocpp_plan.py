"""Which charging profile carries a setpoint: pure rules, one row per case."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ocpp.messages import MessageType, get_validator

from control.ocpp_plan import (
    ChargingProfilePlan,
    Refusal,
    StationFacts,
    clear_requests,
    freq_watt_curve,
    plan_local_frequency,
    plan_setpoint,
    plan_station_max,
    profile_id,
)
from gridflex.config import DroopConfig
from gridflex.contract import EvChargingNeeds
from pipelines.dispatch import DroopParams, droop_delta_w
from simulators.charger.control import curve_power_w

TS = "2025-03-01T10:00:00.250Z"
V2X = EvChargingNeeds(
    v2x=True, max_charge_w=11_000, max_discharge_w=6_000, energy_transfer_mode="DC_BPT"
)
CHARGE_ONLY = EvChargingNeeds(v2x=False, max_charge_w=11_040, energy_transfer_mode="AC_three_phase")


def facts(
    version: str = "2.1",
    needs: EvChargingNeeds | None = V2X,
    tx: str | None = "tx-1",
    evse_id: int = 1,
    max_discharge_w: float = 10_000,
) -> StationFacts:
    return StationFacts(
        ocpp_version="2.1" if version == "2.1" else "2.0.1",
        transaction_id=tx,
        needs=needs,
        max_charge_w=22_000,
        max_discharge_w=max_discharge_w,
        evse_id=evse_id,
    )


def period(plan: ChargingProfilePlan) -> dict[str, Any]:
    return plan.request["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"][0]


def validate(version: str, action: str, request: dict[str, Any]) -> None:
    get_validator(MessageType.Call, action, version).validate(request)


# --------------------------------------------------------------------------- setpoints

# (station, setpoint W) -> purpose, operation mode, sent W, the schedule period
PLANS = [
    # 2.1 V2X car in a transaction: CentralSetpoint, caps min(site, car)
    (
        facts(),
        -5_000,
        "TxProfile",
        "CentralSetpoint",
        -5_000,
        {
            "startPeriod": 0,
            "operationMode": "CentralSetpoint",
            "setpoint": -5_000,
            "limit": 11_000,  # min(site 22 kW, car 11 kW)
            "dischargeLimit": -6_000,  # min(site 10 kW, car 6 kW), negative
        },
    ),
    # beyond the car's discharge: clamped to it
    (facts(), -9_000, "TxProfile", "CentralSetpoint", -6_000, None),
    # 2.1 charge-only car: a ChargingOnly limit
    (
        facts(needs=CHARGE_ONLY),
        4_000,
        "TxProfile",
        "ChargingOnly",
        4_000,
        {"startPeriod": 0, "limit": 4_000, "operationMode": "ChargingOnly"},
    ),
    # 2.0.1: a plain non-negative limit without operation mode
    (
        facts("2.0.1", CHARGE_ONLY),
        3_000,
        "TxProfile",
        "Limit",
        3_000,
        {"startPeriod": 0, "limit": 3_000},
    ),
    # 0 W pauses with a zero limit
    (facts("2.0.1", None), 0, "TxProfile", "Limit", 0, {"startPeriod": 0, "limit": 0}),
    # no transaction, 2.1: a TxDefaultProfile ChargingOnly limit on the EVSE
    (
        facts(tx=None, needs=None),
        5_000,
        "TxDefaultProfile",
        "ChargingOnly",
        5_000,
        {"startPeriod": 0, "limit": 5_000, "operationMode": "ChargingOnly"},
    ),
    # no transaction, 2.0.1: a TxDefaultProfile limit, capped by the site
    (
        facts("2.0.1", None, tx=None),
        30_000,
        "TxDefaultProfile",
        "Limit",
        22_000,
        {"startPeriod": 0, "limit": 22_000},
    ),
]


@pytest.mark.parametrize(("station", "power_w", "purpose", "mode", "sent_w", "expected"), PLANS)
def test_setpoint_plan(
    *,
    station: StationFacts,
    power_w: float,
    purpose: str,
    mode: str,
    sent_w: float,
    expected: dict[str, Any] | None,
) -> None:
    plan = plan_setpoint(station, power_w)
    assert isinstance(plan, ChargingProfilePlan)
    assert (plan.purpose, plan.operation_mode, plan.sent_w) == (purpose, mode, sent_w)
    assert plan.clamped is (sent_w != power_w)
    if expected is not None:
        assert period(plan) == expected
    profile = plan.request["chargingProfile"]
    assert profile["chargingProfilePurpose"] == purpose
    assert profile["chargingSchedule"][0]["chargingRateUnit"] == "W"
    assert profile["chargingProfileKind"] == "Relative"
    if purpose == "TxProfile":
        assert profile["transactionId"] == station.transaction_id
    else:
        assert "transactionId" not in profile


@pytest.mark.parametrize(
    ("station", "reason_part"),
    [
        (facts(version="2.0.1"), "OCPP 2.0.1"),  # 2.0.1 has no discharge
        (facts(needs=CHARGE_ONLY), "charge-only"),  # ISO 15118-2 car
        (facts(needs=None), "charging needs"),  # no NotifyEVChargingNeeds yet
        (facts(tx=None), "no transaction runs on EVSE 1"),  # discharge needs a session
        (facts(max_discharge_w=0), "max_discharge_w is 0"),  # the site allows none
    ],
)
def test_discharge_that_cannot_be_honoured_is_refused(
    station: StationFacts, reason_part: str
) -> None:
    result = plan_setpoint(station, -5_000)
    assert isinstance(result, Refusal)
    assert reason_part in result.reason


@pytest.mark.parametrize(
    ("station", "purpose"),
    [
        (facts(evse_id=2), "TxProfile"),
        (facts(tx=None, evse_id=3), "TxDefaultProfile"),
        (facts("2.0.1", None, evse_id=2), "TxProfile"),
    ],
)
def test_the_profile_targets_its_evse_with_an_id_of_its_own(
    station: StationFacts, purpose: str
) -> None:
    plan = plan_setpoint(station, 1_000)
    assert isinstance(plan, ChargingProfilePlan)
    assert plan.request["evseId"] == station.evse_id
    expected_id = profile_id(plan.purpose, station.evse_id)
    assert plan.request["chargingProfile"]["id"] == expected_id
    assert plan.purpose == purpose


def test_profile_ids_differ_per_purpose_and_evse() -> None:
    ids = {
        profile_id(purpose, evse)
        for purpose in ("TxProfile", "TxDefaultProfile")
        for evse in (1, 2, 3)
    }
    assert len(ids) == 6
    assert profile_id("ChargingStationMaxProfile", 0) not in ids


def test_valid_to_and_offline_duration_are_fail_safes() -> None:
    plan = plan_setpoint(facts(), 1_000, valid_to="2025-03-01T10:05:00.000Z", max_offline_s=60)
    assert isinstance(plan, ChargingProfilePlan)
    profile = plan.request["chargingProfile"]
    assert profile["validTo"] == "2025-03-01T10:05:00.000Z"
    assert profile["maxOfflineDuration"] == 60
    assert profile["invalidAfterOfflineDuration"] is True
    plan_201 = plan_setpoint(facts(version="2.0.1", needs=None), 1_000, max_offline_s=60)
    assert isinstance(plan_201, ChargingProfilePlan)
    assert "maxOfflineDuration" not in plan_201.request["chargingProfile"]  # not in 2.0.1


@pytest.mark.parametrize(
    ("version", "needs", "tx", "power_w"),
    [
        ("2.1", V2X, "tx-1", -5_000),
        ("2.1", CHARGE_ONLY, "tx-1", 2_000),
        ("2.0.1", None, "tx-1", 7_000),
        ("2.1", V2X, "tx-1", 1e6),
        ("2.1", None, None, 3_000),
        ("2.0.1", None, None, 3_000),
    ],
)
def test_planned_requests_validate_against_the_ocpp_schema(
    version: str, needs: EvChargingNeeds | None, tx: str | None, power_w: float
) -> None:
    plan = plan_setpoint(
        facts(version=version, needs=needs, tx=tx), power_w, valid_to=TS, max_offline_s=30
    )
    assert isinstance(plan, ChargingProfilePlan)
    validate(version, "SetChargingProfile", plan.request)


# --------------------------------------------------------------------------- station max


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_station_max_is_an_absolute_profile_on_evse_0(version: str) -> None:
    plan = plan_station_max("2.1" if version == "2.1" else "2.0.1", 30_000, start_schedule=TS)
    validate(version, "SetChargingProfile", plan.request)
    assert plan.request["evseId"] == 0
    profile = plan.request["chargingProfile"]
    assert profile["chargingProfilePurpose"] == "ChargingStationMaxProfile"
    assert profile["chargingProfileKind"] == "Absolute"  # OCPP forbids a Relative one
    assert profile["chargingSchedule"][0]["startSchedule"] == TS
    assert period(plan) == {"startPeriod": 0, "limit": 30_000}


def test_clear_requests_name_only_gridflex_profiles_of_the_evse() -> None:
    assert clear_requests(2) == [
        {"chargingProfileId": profile_id("TxProfile", 2)},
        {"chargingProfileId": profile_id("TxDefaultProfile", 2)},
    ]
    for request in clear_requests(2):
        validate("2.1", "ClearChargingProfile", request)


# --------------------------------------------------------------------------- local frequency

CURVE = ((49.914, -10_000.0), (49.964, 0.0), (50.036, 0.0), (50.086, 10_000.0))


def test_local_frequency_is_a_tx_profile_with_the_curve_and_the_caps() -> None:
    plan = plan_local_frequency(facts(), CURVE, baseline_w=12_000, valid_to=TS)
    assert isinstance(plan, ChargingProfilePlan)
    validate("2.1", "SetChargingProfile", plan.request)
    assert (plan.purpose, plan.operation_mode, plan.sent_w) == (
        "TxProfile",
        "LocalFrequency",
        11_000,
    )
    assert plan.clamped is True  # the baseline: the car charges at most 11 kW
    assert period(plan) == {
        "startPeriod": 0,
        "operationMode": "LocalFrequency",
        "limit": 11_000,
        "dischargeLimit": -6_000,
        "v2xBaseline": 11_000,
        "v2xFreqWattCurve": [  # as given: the station clips at limit and dischargeLimit
            {"frequency": 49.914, "power": -10_000},
            {"frequency": 49.964, "power": 0.0},
            {"frequency": 50.036, "power": 0.0},
            {"frequency": 50.086, "power": 10_000.0},
        ],
    }
    # shares the TxProfile's id: it replaces a setpoint, and a setpoint replaces it
    assert plan.request["chargingProfile"]["id"] == profile_id("TxProfile", 1)


def test_local_frequency_for_a_charge_only_car_allows_no_discharge() -> None:
    plan = plan_local_frequency(facts(needs=CHARGE_ONLY), CURVE)
    assert isinstance(plan, ChargingProfilePlan)
    assert period(plan)["dischargeLimit"] == 0


@pytest.mark.parametrize(
    ("station", "curve", "reason_part"),
    [
        (facts(version="2.0.1"), CURVE, "OCPP 2.0.1"),
        (facts(tx=None), CURVE, "no transaction"),
        (facts(), (), "1 to 20 points"),
        (facts(), ((50.1, 0.0), (50.0, 1.0)), "increase"),
    ],
)
def test_local_frequency_refusals(
    station: StationFacts, curve: tuple[tuple[float, float], ...], reason_part: str
) -> None:
    result = plan_local_frequency(station, curve)
    assert isinstance(result, Refusal)
    assert reason_part in result.reason


def test_freq_watt_curve_of_the_ieee_1547_defaults() -> None:
    curve = freq_watt_curve(50.0, DroopConfig(), rated_charge_w=11_000, rated_discharge_w=7_000)
    flat = [value for point in curve for value in point]
    # full discharge 2.5 Hz (k_uf x 50 Hz) below the dead band, full charge as far above
    assert flat == pytest.approx([47.464, -7_000, 49.964, 0, 50.036, 0, 52.536, 11_000])


@settings(max_examples=200, deadline=None)
@given(
    freq_hz=st.floats(45.0, 55.0),
    nominal_hz=st.sampled_from([50.0, 60.0]),
    db_hz=st.floats(0.017, 1.0),
    k=st.floats(0.01, 0.1),
    charge_w=st.floats(0.0, 50_000.0),
    discharge_w=st.floats(0.0, 50_000.0),
)
def test_the_curve_interpolated_is_the_dispatch_droop_law(
    *,
    freq_hz: float,
    nominal_hz: float,
    db_hz: float,
    k: float,
    charge_w: float,
    discharge_w: float,
) -> None:
    params = DroopParams(db_of_hz=db_hz, db_uf_hz=db_hz, k_of=k, k_uf=k)
    curve = freq_watt_curve(
        nominal_hz, params, rated_charge_w=charge_w, rated_discharge_w=discharge_w
    )
    expected = droop_delta_w(
        freq_hz, nominal_hz, params, rated_charge_w=charge_w, rated_discharge_w=discharge_w
    )
    assert curve_power_w(curve, freq_hz) == pytest.approx(expected, abs=1e-6)
