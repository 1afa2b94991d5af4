"""Inverter physics and the SunSpec register map, without sockets."""

from __future__ import annotations

import struct

import pytest

from gridflex.sunspec.tables import load_model
from simulators.inverter import (
    BASE_ADDRESS,
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_DATA_VALUE,
    ILLEGAL_FUNCTION,
    InverterModel,
    InverterRatings,
    SimulatedInverter,
)

RATINGS = InverterRatings(
    max_charge_w=10_000, max_discharge_w=8_000, capacity_wh=10_000, ramp_w_per_s=1_000
)


def _run(model: InverterModel, seconds: float, dt_s: float = 0.1) -> None:
    for _ in range(round(seconds / dt_s)):
        model.step(dt_s)


def test_power_ramps_toward_the_setpoint_at_the_ramp_limit() -> None:
    model = InverterModel(ratings=RATINGS)
    model.write_setpoint(True, 3_000)
    _run(model, 1.0)
    assert model.power_w == pytest.approx(1_000)  # 1 s at 1000 W/s
    _run(model, 5.0)
    assert model.power_w == pytest.approx(3_000)


def test_disabled_setpoint_means_zero_power() -> None:
    model = InverterModel(ratings=RATINGS, power_w=2_000)
    model.write_setpoint(False, 5_000)
    _run(model, 3.0)
    assert model.power_w == 0.0


@pytest.mark.parametrize(("setpoint_w", "expected_w"), [(50_000, 10_000), (-50_000, -8_000)])
def test_setpoint_is_clamped_to_the_ratings(setpoint_w: float, expected_w: float) -> None:
    model = InverterModel(ratings=RATINGS, power_w=expected_w)
    model.write_setpoint(True, setpoint_w)
    _run(model, 1.0)
    assert model.power_w == pytest.approx(expected_w)


def test_wmaxlimpct_limits_power_to_a_share_of_the_rating() -> None:
    model = InverterModel(ratings=RATINGS, wmax_lim_enabled=True, wmax_lim_pct=50.0)
    model.write_setpoint(True, 9_000)
    _run(model, 20.0)
    assert model.power_w == pytest.approx(5_000)


def test_soc_integrates_power_against_capacity() -> None:
    model = InverterModel(ratings=RATINGS, soc_pct=50.0, power_w=3_600)
    model.write_setpoint(True, 3_600)
    _run(model, 100.0)  # 3600 W for 100 s = 100 Wh = 1 % of 10 kWh
    assert model.soc_pct == pytest.approx(51.0)
    assert model.energy_import_wh == pytest.approx(100.0)
    assert model.energy_export_wh == 0.0


def test_charging_stops_at_the_soc_stop_point() -> None:
    ratings = InverterRatings(capacity_wh=1_000, ramp_w_per_s=1e6, soc_stop_max_pct=90.0)
    model = InverterModel(ratings=ratings, soc_pct=89.0)
    model.write_setpoint(True, 10_000)
    _run(model, 60.0)
    assert model.soc_pct == pytest.approx(90.0)
    assert model.power_w == 0.0


def test_discharging_stops_at_empty() -> None:
    ratings = InverterRatings(capacity_wh=1_000, ramp_w_per_s=1e6)
    model = InverterModel(ratings=ratings, soc_pct=1.0)
    model.write_setpoint(True, -10_000)
    _run(model, 60.0)
    assert model.soc_pct == 0.0
    assert model.power_w == 0.0
    assert model.target_w() == 0.0


def test_energy_meters_only_count_up() -> None:
    model = InverterModel(ratings=RATINGS, energy_import_wh=5.0, energy_export_wh=7.0)
    imports, exports = [], []
    for setpoint in (2_000, -2_000, 1_000):
        model.write_setpoint(True, setpoint)
        for _ in range(50):
            model.step(0.1)
            imports.append(model.energy_import_wh)
            exports.append(model.energy_export_wh)
    assert imports == sorted(imports) and exports == sorted(exports)
    assert imports[-1] > 5.0 and exports[-1] > 7.0


def test_setpoint_reverts_after_wsetrvrttms_without_a_new_write() -> None:
    model = InverterModel(ratings=RATINGS, revert_timeout_s=2.0, revert_setpoint_w=0.0)
    model.write_setpoint(True, 4_000)
    _run(model, 1.5)
    assert model.setpoint_w == 4_000
    model.write_setpoint(True, 4_000)  # a new write restarts the timer
    _run(model, 1.5)
    assert model.setpoint_w == 4_000
    _run(model, 1.0)
    assert model.setpoint_w == 0.0
    assert model.revert_remaining_s == 0.0


# --------------------------------------------------------------------------- register map


def _device() -> SimulatedInverter:
    return SimulatedInverter(InverterModel(ratings=RATINGS, soc_pct=42.0), serial="T1")


def test_map_starts_with_suns_and_lists_the_models_then_the_end_marker() -> None:
    device = _device()
    assert device.read(BASE_ADDRESS, 2) == [0x5375, 0x6E53]
    address, found = BASE_ADDRESS + 2, []
    while True:
        model_id, length = device.read(address, 2)
        if model_id == 0xFFFF:
            assert length == 0
            break
        found.append((model_id, length))
        address += 2 + length
    assert found == [(m, load_model(m).length) for m in (1, 701, 702, 704, 711, 713)]
    assert address + 2 == device.end_address


def test_measurements_are_encoded_with_their_scale_factors() -> None:
    device = _device()
    device.model.power_w = -2_500.0  # discharging = SunSpec injection, + W
    device.refresh(49.987)
    assert device.decode_point(701, "W") == 2_500
    assert device.decode_point(701, "Hz") == 49_987
    assert device.decode_point(701, "Hz_SF") == -3
    assert device.decode_point(713, "SoC") == 420
    assert device.decode_point(713, "Pct_SF") == -1
    assert device.decode_point(1, "SN") == "T1"
    assert device.decode_point(701, "Var") is None  # not implemented


def _fc16(address: int, values: list[int]) -> bytes:
    return struct.pack(f">BHHB{len(values)}H", 16, address, len(values), 2 * len(values), *values)


def test_setpoint_write_reads_back_and_reaches_the_model() -> None:
    device = _device()
    wset = device.address_of(704, "WSet")
    reply = device.handle_pdu(1, _fc16(wset, [0xFFFF, 0xF060]))  # WSet = -4000 (absorb)
    assert reply == struct.pack(">BHH", 16, wset, 2)
    device.handle_pdu(1, struct.pack(">BHH", 6, device.address_of(704, "WSetEna"), 1))
    assert device.decode_point(704, "WSet") == -4_000
    assert device.model.setpoint_enabled
    assert device.model.setpoint_w == 4_000  # gridflex sign: + charging


def test_write_to_a_read_only_register_is_illegal_data_address() -> None:
    device = _device()
    w = device.address_of(701, "W")
    assert device.handle_pdu(1, struct.pack(">BHH", 6, w, 5)) == bytes((0x86, ILLEGAL_DATA_ADDRESS))
    sf = device.address_of(704, "WSet_SF")
    assert device.handle_pdu(1, _fc16(sf - 1, [0, 0])) == bytes((0x90, ILLEGAL_DATA_ADDRESS))


def test_bad_enum_value_is_illegal_data_value_and_changes_nothing() -> None:
    device = _device()
    ena = device.address_of(704, "WSetEna")
    assert device.handle_pdu(1, struct.pack(">BHH", 6, ena, 7)) == bytes((0x86, ILLEGAL_DATA_VALUE))
    assert device.decode_point(704, "WSetEna") == 0


def test_read_outside_the_map_and_unknown_function_are_exceptions() -> None:
    device = _device()
    assert device.handle_pdu(1, struct.pack(">BHH", 3, 0, 2)) == bytes((0x83, ILLEGAL_DATA_ADDRESS))
    end = device.end_address
    assert device.handle_pdu(1, struct.pack(">BHH", 3, end - 1, 2))[0] == 0x83
    assert device.handle_pdu(1, struct.pack(">BHH", 4, BASE_ADDRESS, 2)) == bytes(
        (0x84, ILLEGAL_FUNCTION)
    )


def test_wmaxlimpct_write_reaches_the_model_with_its_scale_factor() -> None:
    device = _device()
    ena = device.address_of(704, "WMaxLimPctEna")
    assert device.address_of(704, "WMaxLimPct") == ena + 1
    assert device.handle_pdu(1, _fc16(ena, [1, 500])) == struct.pack(">BHH", 16, ena, 2)
    assert device.model.wmax_lim_enabled
    assert device.model.wmax_lim_pct == pytest.approx(50.0)
