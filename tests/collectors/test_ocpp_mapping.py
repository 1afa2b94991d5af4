"""Pure OCPP -> contract conversions: timestamps, meter values, charging needs, setpoints."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from collectors.ocpp.mapping import (
    ac_power_w,
    charging_needs,
    device_status,
    format_ocpp_time,
    parse_ocpp_time,
    read_meter_value,
    telemetry_status,
)

TS = "2025-03-01T10:00:00.250Z"
TS_MS = 1740823200250

# --------------------------------------------------------------------------- timestamps


def test_format_uses_z_suffix_and_milliseconds() -> None:
    text = format_ocpp_time(datetime(2025, 3, 1, 10, 0, 0, 250_000, tzinfo=UTC))
    assert text == TS


def test_format_converts_other_offsets_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    assert format_ocpp_time(datetime(2025, 3, 1, 11, 0, 0, 250_000, tzinfo=cet)) == TS


def test_format_accepts_epoch_milliseconds() -> None:
    assert format_ocpp_time(TS_MS) == TS


def test_format_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_ocpp_time(datetime(2025, 3, 1))  # noqa: DTZ001 - the case under test


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        (TS, TS_MS),
        ("2025-03-01T11:00:00.250+01:00", TS_MS),
        ("2025-03-01T10:00:00.250", TS_MS),  # no offset: read as UTC
        ("2025-03-01T10:00:00Z", TS_MS - 250),
    ],
)
def test_parse_returns_utc_epoch_ms(text: str, expected_ms: int) -> None:
    assert parse_ocpp_time(text) == expected_ms


def test_parse_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        parse_ocpp_time("yesterday")


# --------------------------------------------------------------------------- meter values


def mv(*values: dict[str, Any]) -> dict[str, Any]:
    return {"timestamp": TS, "sampledValue": list(values)}


def sv(measurand: str, value: float, unit: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"measurand": measurand, "value": value, **extra}
    if unit is not None:
        out["unitOfMeasure"] = {"unit": unit}
    return out


def test_import_minus_export_gives_signed_power() -> None:
    charging = read_meter_value(mv(sv("Power.Active.Import", 7400), sv("Power.Active.Export", 0)))
    discharging = read_meter_value(
        mv(sv("Power.Active.Import", 0), sv("Power.Active.Export", 5000))
    )
    assert charging.power_w == 7400
    assert discharging.power_w == -5000


def test_kilo_units_and_multipliers_are_scaled() -> None:
    reading = read_meter_value(
        mv(
            sv("Power.Active.Import", 7.4, "kW"),
            sv("Energy.Active.Import.Register", 12.5, "kWh"),
            {
                "measurand": "Energy.Active.Export.Register",
                "value": 3,
                "unitOfMeasure": {"unit": "Wh", "multiplier": 3},
            },
        )
    )
    assert reading.power_w == pytest.approx(7400)
    assert reading.energy_import_wh == pytest.approx(12_500)
    assert reading.energy_export_wh == pytest.approx(3_000)


def test_a_value_without_measurand_is_the_energy_import_register_in_wh() -> None:
    reading = read_meter_value(mv({"value": 1234.5}))
    assert reading.energy_import_wh == 1234.5
    assert reading.power_w is None


def test_phase_powers_are_summed_and_phase_voltages_averaged() -> None:
    reading = read_meter_value(
        mv(
            sv("Power.Active.Import", 2000, phase="L1"),
            sv("Power.Active.Import", 2100, phase="L2"),
            sv("Power.Active.Import", 2200, phase="L3"),
            sv("Voltage", 229, phase="L1-N"),
            sv("Voltage", 231, phase="L2-N"),
            sv("Voltage", 230, phase="L3-N"),
            sv("Current.Import", 9, phase="L1"),
            sv("Current.Import", 11, phase="L2"),
        )
    )
    assert reading.power_w == pytest.approx(6300)
    assert reading.voltage_v == pytest.approx(230)
    assert reading.current_a == pytest.approx(10)


def test_the_total_wins_over_phase_values_and_outlet_over_other_locations() -> None:
    reading = read_meter_value(
        mv(
            sv("Power.Active.Import", 999, phase="L1"),
            sv("Power.Active.Import", 11_000, location="Inlet"),
            sv("Power.Active.Import", 7_000),
        )
    )
    assert reading.power_w == 7_000


def test_soc_current_voltage_frequency_and_setpoint() -> None:
    reading = read_meter_value(
        mv(
            sv("SoC", 55.5, "Percent", location="EV"),
            sv("Current.Export", 7.2, "A"),
            sv("Voltage", 230, "V"),
            sv("Frequency", 49.98),
            sv("Power.Active.Setpoint", -5000, "W"),
        )
    )
    assert reading.soc_pct == 55.5
    assert reading.current_a == pytest.approx(-7.2)  # export current is negative
    assert reading.voltage_v == 230
    assert reading.freq_hz == 49.98
    assert reading.setpoint_w == -5000
    assert reading.ts_ms == TS_MS


def test_unused_measurands_are_ignored() -> None:
    reading = read_meter_value(mv(sv("Power.Reactive.Import", 5, "var")))
    assert reading.power_w is None


def test_an_unsupported_unit_of_a_used_measurand_is_refused() -> None:
    with pytest.raises(ValueError, match="unit"):
        read_meter_value(mv(sv("Power.Active.Import", 5, "furlong")))


@pytest.mark.parametrize(
    ("station", "expected"),
    [
        (("Occupied", "Charging", False, 7_360.0, False), "charging"),
        (("Occupied", "Charging", False, 0.0, False), "charging"),  # contactor closed
        (("Occupied", "Charging", False, -7_000.0, False), "discharging"),  # OCPP 2.1 V2X
        (("Occupied", "SuspendedEV", False, 0.0, False), "suspended"),
        (("Occupied", "SuspendedEVSE", False, 0.0, False), "suspended"),
        (("Occupied", "EVConnected", False, 0.0, False), "idle"),
        (("Available", "Idle", False, 0.0, False), "idle"),
        (("Occupied", None, False, 0.0, False), "idle"),
        (("Available", None, False, 0.0, False), "idle"),
        (("Reserved", None, False, 0.0, False), "idle"),
        (("Unavailable", None, False, 0.0, False), "unavailable"),
        (("Faulted", "Charging", False, 7_000.0, False), "fault"),
        (("Available", None, True, 0.0, False), "fault"),  # an active fault code
        (("Occupied", "Charging", False, 7_360.0, True), "idle"),  # the Ended reading
        (("Occupied", "Charging", True, 0.0, True), "fault"),  # ended by a ground fault
        ((None, None, False, 0.0, False), None),
    ],
)
def test_telemetry_status(
    station: tuple[str | None, str | None, bool, float, bool], expected: str | None
) -> None:
    connector, charging, faulted, power_w, ended = station
    status = telemetry_status(connector, charging, faulted, power_w=power_w, ended=ended)
    assert status == expected


@pytest.mark.parametrize(
    ("connector", "charging", "ended", "expected"),
    [
        ("Occupied", "SuspendedEV", False, "SuspendedEV"),
        ("Occupied", None, False, "Occupied"),
        ("Occupied", "Charging", True, "Ended"),
        (None, None, False, None),
    ],
)
def test_device_status_keeps_the_stations_word(
    connector: str | None, charging: str | None, ended: bool, expected: str | None
) -> None:
    assert device_status(connector, charging, ended=ended) == expected


# --------------------------------------------------------------------------- charging needs


def test_iso15118_20_car_on_21_is_v2x_with_its_limits() -> None:
    needs = charging_needs(
        {
            "requestedEnergyTransfer": "DC_BPT",
            "departureTime": "2025-03-01T18:00:00Z",
            "dcChargingParameters": {
                "evMaxCurrent": 30,
                "evMaxVoltage": 450,
                "stateOfCharge": 40,
                "evEnergyCapacity": 60_000,
            },
            "v2xChargingParameters": {
                "maxChargePower": 11_000,
                "maxDischargePower": 7_000,
                "evTargetEnergyRequest": 24_000,
                "evMinV2XEnergyRequest": -12_000,  # 12 kWh above the V2X floor
                "targetSoC": 80,
            },
        }
    )
    assert needs.v2x is True
    assert needs.max_charge_w == 11_000
    assert needs.max_discharge_w == 7_000
    assert needs.requested_energy_wh == 24_000
    assert needs.target_soc_pct == 80
    assert needs.min_soc_pct == pytest.approx(20)  # 40 % - 12 kWh / 60 kWh
    assert needs.departure_ms == parse_ocpp_time("2025-03-01T18:00:00Z")
    assert needs.energy_transfer_mode == "DC_BPT"


def test_iso15118_2_ac_car_is_charge_only_with_power_from_current_and_voltage() -> None:
    needs = charging_needs(
        {
            "requestedEnergyTransfer": "AC_three_phase",
            "acChargingParameters": {
                "energyAmount": 20_000,
                "evMinCurrent": 6,
                "evMaxCurrent": 16,
                "evMaxVoltage": 230,
            },
        }
    )
    assert needs.v2x is False
    assert needs.max_charge_w == pytest.approx(11_040)  # 16 A x 230 V (phase) x 3
    assert needs.max_discharge_w == 0
    assert needs.requested_energy_wh == 20_000
    assert needs.min_soc_pct is None


@pytest.mark.parametrize(
    ("mode", "current_a", "voltage_v", "expected_w"),
    [
        ("AC_single_phase", 32, 230, 7_360.0),  # 32 A x 230 V
        ("AC_three_phase", 32, 400, 22_170.3),  # 32 A x 400 V / sqrt(3) x 3, not 38.4 kW
        ("AC_three_phase", 16, 230, 11_040.0),  # phase voltage stated: 16 A x 230 V x 3
        ("AC_two_phase", 16, 400, 7_390.0),  # 16 A x 230.9 V x 2
        ("AC_single_phase", 16, 400, 6_400.0),  # one phase: the voltage is as stated
        ("AC_three_phase", 16, 250, 12_000.0),  # 250 V is still phase-to-neutral
    ],
)
def test_ac_power_limit_is_current_times_phase_voltage_times_phases(
    mode: str, current_a: float, voltage_v: float, expected_w: float
) -> None:
    needs = charging_needs(
        {
            "requestedEnergyTransfer": mode,
            "acChargingParameters": {
                "energyAmount": 20_000,
                "evMinCurrent": 6,
                "evMaxCurrent": current_a,
                "evMaxVoltage": voltage_v,
            },
        }
    )
    assert needs.max_charge_w == pytest.approx(expected_w, abs=0.1)


def test_ac_power_w_golden_values() -> None:
    assert ac_power_w(32, 230, 1) == pytest.approx(7_360.0)
    assert ac_power_w(32, 400, 3) == pytest.approx(32 * 400 / math.sqrt(3) * 3)
    assert ac_power_w(32, 400, 3) == pytest.approx(22_170.3, abs=0.1)
    assert ac_power_w(16, 230, 3) == pytest.approx(11_040.0)


def test_bpt_parameters_without_a_bpt_request_do_not_make_a_v2x_car() -> None:
    needs = charging_needs(
        {
            "requestedEnergyTransfer": "DC",
            "v2xChargingParameters": {"maxDischargePower": 7_000},
        }
    )
    assert needs.v2x is False
    assert needs.max_discharge_w == 0
