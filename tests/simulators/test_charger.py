"""Simulated charging stations without sockets: fleets, control rules, payload shapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ocpp.charge_point import remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.messages import MessageType, get_validator
from ocpp.v21 import call as call21
from ocpp.v201 import call as call201

from simulators.charger.control import (
    Control,
    control_from_profile,
    curve_power_w,
    requested_power_w,
    share_station_max,
)
from simulators.charger.fleet import (
    EvseSpec,
    Faults,
    StationSpec,
    build_fleet,
    fleet_from_site,
    site_assets,
)
from simulators.charger.station import SimStation
from simulators.charger.wire import charging_needs_payload, sampled_values
from simulators.ev import CarSpec, EvState

V2X_CAR = CarSpec(max_charge_w=11_000, max_discharge_w=7_000, v2x=True, target_soc_pct=80)
CHARGE_ONLY = CarSpec(max_charge_w=11_000, v2x=False, target_soc_pct=80)
ALL = frozenset(
    {
        "Energy.Active.Import.Register",
        "Energy.Active.Export.Register",
        "Power.Active.Import",
        "Power.Active.Export",
        "SoC",
        "Current.Import",
        "Current.Export",
        "Voltage",
    }
)


def station(version: str = "2.1", car: CarSpec = V2X_CAR) -> SimStation:
    spec = StationSpec.single("cs-1", None, "2.1" if version == "2.1" else "2.0.1", car)
    return SimStation(spec, "ws://127.0.0.1:1/ocpp")


def validate(version: str, action: str, payload: dict[str, Any]) -> None:
    get_validator(MessageType.Call, action, version).validate(payload)


# --------------------------------------------------------------------------- fleets


def test_fleet_is_seeded_with_exact_version_and_v2x_shares() -> None:
    fleet = build_fleet(10, seed=3, v21_fraction=0.3, v2x_fraction=0.6, password="p" * 16)
    assert fleet == build_fleet(10, seed=3, v21_fraction=0.3, v2x_fraction=0.6, password="p" * 16)
    assert sum(s.ocpp_version == "2.1" for s in fleet) == 3
    assert sum(e.car.v2x for s in fleet for e in s.evses) == 6
    assert [s.station_id for s in fleet][:2] == ["sim-cs-0001", "sim-cs-0002"]
    assert len({s.seed for s in fleet}) == 10


def test_fleet_with_several_evses_per_station_gives_each_evse_its_car() -> None:
    fleet = build_fleet(3, seed=2, evses_per_station=2, password="p" * 16)
    assert [[e.evse_id for e in s.evses] for s in fleet] == [[1, 2]] * 3
    assert len({e.car for s in fleet for e in s.evses}) > 1


def test_site_assets_read_back_as_the_same_fleet(tmp_path: Path) -> None:
    fleet = build_fleet(2, evses_per_station=2, password="p" * 16, id_prefix="cs")
    single = build_fleet(1, password="q" * 16, id_prefix="solo")
    assets = site_assets(fleet + single)
    ids = [a["id"] for a in assets]
    assert ids == ["cs-0001-1", "cs-0001-2", "cs-0002-1", "cs-0002-2", "solo-0001"]
    lines = ['[site]\nid = "s1"\n']
    for asset in assets:
        lines.append("[[assets]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in asset.items()]
    path = tmp_path / "site.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    again = fleet_from_site(path)
    assert [(s.station_id, s.password, [e.evse_id for e in s.evses]) for s in again] == [
        ("cs-0001", "p" * 16, [1, 2]),
        ("cs-0002", "p" * 16, [1, 2]),
        ("solo-0001", "q" * 16, [1]),
    ]


def test_single_version_fleet() -> None:
    assert {s.ocpp_version for s in build_fleet(4, ocpp="2.0.1")} == {"2.0.1"}
    assert {s.ocpp_version for s in build_fleet(4, ocpp="2.1")} == {"2.1"}


def test_faults_go_to_the_first_n_stations_only() -> None:
    faults = Faults(ground_fault_after_s=5, drop_rate=0.1)
    fleet = build_fleet(4, faults=faults, faulty=1)
    assert fleet[0].faults == faults
    assert all(s.faults == Faults() for s in fleet[1:])


def test_drop_rate_outside_0_1_is_refused() -> None:
    with pytest.raises(ValueError):
        Faults(drop_rate=1.5)


# --------------------------------------------------------------------------- control


@pytest.mark.parametrize(
    ("car", "soc", "control", "expected_w"),
    [
        (V2X_CAR, 50, None, 11_000),  # no profile: full power
        (V2X_CAR, 80, None, 0),  # at its target SoC the car stops
        (V2X_CAR, 50, Control("TxProfileLimit", limit_w=3_000), 3_000),
        (V2X_CAR, 50, Control("ChargingOnly", limit_w=-100), 0),  # a limit never discharges
        (V2X_CAR, 50, Control("CentralSetpoint", 11_000, -5_000, -7_000), -5_000),
        (V2X_CAR, 50, Control("CentralSetpoint", 11_000, -9_000, -7_000), -7_000),
        (V2X_CAR, 90, Control("CentralSetpoint", 11_000, 4_000, -7_000), 4_000),  # above target
        (V2X_CAR, 50, Control("CentralSetpoint", 2_000, 4_000, 0), 2_000),
    ],
)
def test_requested_power(
    car: CarSpec, soc: float, control: Control | None, expected_w: float
) -> None:
    assert requested_power_w(car, soc, control) == expected_w


DROOP = ((49.0, -10_000.0), (49.9, 0.0), (50.1, 0.0), (51.0, 10_000.0))


@pytest.mark.parametrize(
    ("freq_hz", "baseline_w", "expected_w"),
    [
        (50.0, 0.0, 0.0),  # inside the dead band
        (49.45, 0.0, -5_000.0),  # half way down the curve
        (48.0, 0.0, -7_000.0),  # beyond the end: -10 kW, held at dischargeLimit -7 kW
        (50.55, 1_000.0, 6_000.0),  # baseline + curve
        (52.0, 3_000.0, 11_000.0),  # held at limit
        (None, 2_000.0, 2_000.0),  # no frequency known: the baseline
    ],
)
def test_local_frequency_follows_the_curve_within_the_limits(
    freq_hz: float | None, baseline_w: float, expected_w: float
) -> None:
    control = Control("LocalFrequency", 11_000, None, -7_000, baseline_w, DROOP)
    assert requested_power_w(V2X_CAR, 50, control, freq_hz) == pytest.approx(expected_w)


def test_curve_is_flat_beyond_its_ends_and_linear_between() -> None:
    powers = [curve_power_w(DROOP, f) for f in (40.0, 49.0, 49.45, 50.0, 51.0, 60.0)]
    assert powers == pytest.approx([-10_000, -10_000, -5_000, 0, 10_000, 10_000])


@pytest.mark.parametrize(
    ("requested", "max_w", "expected"),
    [
        ([11_000, 11_000], 8_000, [4_000, 4_000]),
        ([6_000, 2_000], 4_000, [3_000, 1_000]),  # each keeps its share
        ([6_000, -3_000], 4_000, [4_000, -3_000]),  # discharge is not charging
        ([3_000, 2_000], 8_000, [3_000, 2_000]),  # within the limit
        ([3_000, 2_000], None, [3_000, 2_000]),  # no limit
    ],
)
def test_station_max_shares_the_limit(
    requested: list[float], max_w: float | None, expected: list[float]
) -> None:
    assert share_station_max(requested, max_w) == expected


def test_control_from_a_central_setpoint_profile() -> None:
    profile = {
        "charging_schedule": [
            {
                "charging_rate_unit": "W",
                "charging_schedule_period": [
                    {
                        "start_period": 0,
                        "operation_mode": "CentralSetpoint",
                        "setpoint": -5000,
                        "limit": 11000,
                        "discharge_limit": -7000,
                    }
                ],
            }
        ]
    }
    assert control_from_profile(profile) == Control("CentralSetpoint", 11000, -5000, -7000)


def test_control_in_amperes_is_refused() -> None:
    profile = {
        "charging_schedule": [
            {
                "charging_rate_unit": "A",
                "charging_schedule_period": [{"start_period": 0, "limit": 16}],
            }
        ]
    }
    with pytest.raises(ValueError, match="W"):
        control_from_profile(profile)


def test_station_accepts_a_central_setpoint_for_its_transaction() -> None:
    sim = station("2.1")
    evse = sim.evses[1]
    evse.plug_in(sim.thermal)
    profile = {
        "id": 1001,
        "charging_profile_purpose": "TxProfile",
        "transaction_id": evse.transaction_id,
        "charging_schedule": [
            {
                "charging_rate_unit": "W",
                "charging_schedule_period": [
                    {"start_period": 0, "operation_mode": "CentralSetpoint", "setpoint": -5000}
                ],
            }
        ],
    }
    assert sim.apply_profile(1, profile) == ("Accepted", None)
    assert sim.control_of(1) == Control("CentralSetpoint", None, -5000, None)


def test_station_rejects_a_profile_for_another_transaction_or_evse() -> None:
    sim = station("2.1")
    profile = {"charging_profile_purpose": "TxProfile", "transaction_id": "other"}
    assert sim.apply_profile(1, profile) == ("Rejected", "TxNotFound")
    sim.evses[1].plug_in(sim.thermal)
    assert sim.apply_profile(2, profile) == ("Rejected", "UnknownEVSE")
    assert len(sim.received_profiles) == 2


def tx_default(limit_w: float, profile_id: int = 2001) -> dict[str, Any]:
    return {
        "id": profile_id,
        "charging_profile_purpose": "TxDefaultProfile",
        "charging_schedule": [
            {
                "charging_rate_unit": "W",
                "charging_schedule_period": [{"start_period": 0, "limit": limit_w}],
            }
        ],
    }


def test_default_profiles_apply_without_a_transaction_per_evse_or_station_wide() -> None:
    spec = StationSpec("cs-1", None, "2.1", (EvseSpec(V2X_CAR, 1), EvseSpec(V2X_CAR, 2)))
    sim = SimStation(spec, "ws://127.0.0.1:1/ocpp")
    assert sim.apply_profile(0, tx_default(3_000, 2000)) == ("Accepted", None)
    assert sim.apply_profile(2, tx_default(5_000, 2002)) == ("Accepted", None)
    assert sim.control_of(1) == Control("ChargingOnly", limit_w=3_000)  # the station's
    assert sim.control_of(2) == Control("ChargingOnly", limit_w=5_000)  # its own wins
    assert sim.clear_profiles(2002) == "Accepted"
    assert sim.control_of(2) == Control("ChargingOnly", limit_w=3_000)
    assert sim.clear_profiles(2002) == "Unknown"
    assert sim.apply_profile(3, tx_default(1_000)) == ("Rejected", "UnknownEVSE")


def test_a_profile_past_its_valid_to_is_no_longer_followed() -> None:
    sim = station()
    sim.evses[1].plug_in(sim.thermal)
    tx = sim.evses[1].transaction_id
    for profile_id, valid_to in ((1001, "2000-01-01T00:00:00.000Z"), (2001, None)):
        profile = {**tx_default(2_000 * (profile_id // 1000), profile_id)}
        if profile_id == 1001:
            profile.update(charging_profile_purpose="TxProfile", transaction_id=tx)
            profile["valid_to"] = valid_to
        assert sim.apply_profile(1, profile) == ("Accepted", None)
    # the TxProfile (2 kW) expired long ago: the EVSE's default (4 kW) is in force
    assert sim.control_of(1) == Control("ChargingOnly", limit_w=4_000)


def test_the_station_max_profile_belongs_on_evse_0() -> None:
    sim = station()
    profile = {**tx_default(8_000, 3000), "charging_profile_purpose": "ChargingStationMaxProfile"}
    assert sim.apply_profile(1, profile) == ("Rejected", "InvalidValue")
    assert sim.apply_profile(0, profile) == ("Accepted", None)
    assert sim.station_max is not None and sim.station_max.control.limit_w == 8_000
    tx = {**tx_default(1_000), "charging_profile_purpose": "TxProfile"}
    assert sim.apply_profile(0, tx) == ("Rejected", "UnknownEVSE")


def test_set_variables_takes_sub_second_intervals_and_measurands() -> None:
    sim = station()

    def item(component: str, variable: str, value: str) -> dict[str, Any]:
        return {
            "attribute_value": value,
            "component": {"name": component},
            "variable": {"name": variable},
        }

    assert (
        sim.set_variable(item("SampledDataCtrlr", "TxUpdatedInterval", "0.2"))["attribute_status"]
        == "Accepted"
    )
    assert sim.tx_interval_s == 0.2
    assert (
        sim.set_variable(item("SampledDataCtrlr", "TxUpdatedMeasurands", "SoC,Voltage"))[
            "attribute_status"
        ]
        == "Accepted"
    )
    assert sim.measurands == {"SoC", "Voltage"}
    assert (
        sim.set_variable(item("SampledDataCtrlr", "TxUpdatedMeasurands", "Bogus"))[
            "attribute_status"
        ]
        == "Rejected"
    )
    assert (
        sim.set_variable(item("SampledDataCtrlr", "TxUpdatedInterval", "fast"))["attribute_status"]
        == "Rejected"
    )
    assert (
        sim.set_variable(item("OCPPCommCtrlr", "Whatever", "1"))["attribute_status"]
        == "UnknownVariable"
    )


# --------------------------------------------------------------------------- payloads


def test_sampled_values_follow_the_measurands_asked_for() -> None:
    ev = EvState(soc_pct=55, power_w=-5_000, energy_import_wh=10, energy_export_wh=20)
    values = {v["measurand"]: v["value"] for v in sampled_values(ev, ALL, setpoint_w=-5_000)}
    assert values["Power.Active.Import"] == 0
    assert values["Power.Active.Export"] == 5_000
    assert values["Current.Export"] > 0
    assert values["Power.Active.Setpoint"] == -5_000
    only = sampled_values(ev, frozenset({"SoC"}))
    assert [v["measurand"] for v in only] == ["SoC"]


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_transaction_events_validate_against_the_ocpp_schema(version: str) -> None:
    sim = station(version)
    sim.measurands = ALL | {"Frequency"}
    sim.freq_hz = 49.9
    evse = sim.evses[1]
    evse.plug_in(sim.thermal)
    validate(
        version,
        "TransactionEvent",
        sim.transaction_event_request(evse, "Started", "CablePluggedIn"),
    )
    updated = sim.transaction_event_request(evse, "Updated", "MeterValuePeriodic")
    validate(version, "TransactionEvent", updated)
    assert {"measurand": "Frequency", "value": 49.9, "unitOfMeasure": {"unit": "Hz"}} in (
        updated["meterValue"][0]["sampledValue"]
    )
    ended = sim.transaction_event_request(
        evse, "Ended", "AbnormalCondition", stopped_reason="GroundFault"
    )
    validate(version, "TransactionEvent", ended)
    assert [updated["seqNo"], ended["seqNo"]] == [1, 2]


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_idle_meter_values_validate_and_carry_no_soc(version: str) -> None:
    sim = station(version)
    sim.measurands = ALL
    request = sim.evses[1].meter_values_request(sim.measurands)
    validate(version, "MeterValues", request)
    assert "SoC" not in {v["measurand"] for v in request["meterValue"][0]["sampledValue"]}


@pytest.mark.parametrize(
    ("version", "car", "mode"),
    [
        ("2.1", V2X_CAR, "DC_BPT"),
        ("2.1", CHARGE_ONLY, "AC_three_phase"),
        ("2.0.1", V2X_CAR, "AC_three_phase"),  # 2.0.1 cannot express V2X: charge-only
    ],
)
def test_charging_needs_validate_and_show_v2x_only_where_possible(
    version: str, car: CarSpec, mode: str
) -> None:
    needs = charging_needs_payload(
        car, EvState(soc_pct=40), "2.1" if version == "2.1" else "2.0.1", departure_epoch_s=1.75e9
    )
    module = call21 if version == "2.1" else call201
    request = module.NotifyEVChargingNeeds(charging_needs=needs, evse_id=1)
    wire = remove_nones(snake_to_camel_case(serialize_as_dict(request)))  # as the library sends it
    validate(version, "NotifyEVChargingNeeds", wire)
    assert wire["chargingNeeds"]["requestedEnergyTransfer"] == mode
    assert wire["chargingNeeds"]["departureTime"].endswith("Z")
    if mode == "DC_BPT":
        assert wire["chargingNeeds"]["v2xChargingParameters"]["maxDischargePower"] == 7_000
