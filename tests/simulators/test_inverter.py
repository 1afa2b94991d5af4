"""Inverter physics and the SunSpec register map, without sockets."""

from __future__ import annotations

import struct

import pytest

from gridflex.sunspec.tables import load_model
from simulators.droop import DroopParams
from simulators.inverter import BASE_ADDRESS, InverterModel, InverterRatings, SimulatedInverter
from simulators.inverter.registers import (
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_DATA_VALUE,
    ILLEGAL_FUNCTION,
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


# --------------------------------------------------------------------------- 711 droop

SYMMETRIC = InverterRatings(
    max_charge_w=10_000, max_discharge_w=10_000, capacity_wh=60_000, ramp_w_per_s=5_000
)


@pytest.mark.parametrize(
    ("freq_hz", "expected_w"),
    [
        (50.00, 0.0),  # nominal: no response
        (49.98, 0.0),  # inside the 36 mHz dead band
        (49.80, -656.0),  # (49.80 - 49.964) / (0.05 * 50) * 10 kW, injected
        (50.20, 656.0),  # mirror image, absorbed with the charge rating
    ],
)
def test_enabled_droop_reaches_the_ieee_1547_response_in_steady_state(
    freq_hz: float, expected_w: float
) -> None:
    model = InverterModel(ratings=SYMMETRIC, droop_enabled=True)
    for _ in range(600):  # 60 s >> tau = 5 s / ln 10
        model.step(0.1, freq_hz)
    assert model.power_w == pytest.approx(expected_w, abs=1e-6)


def test_droop_follows_a_first_order_lag_with_90_pct_at_rsptms() -> None:
    model = InverterModel(ratings=SYMMETRIC, droop_enabled=True)
    _run(model, 1.0)
    for _ in range(50):  # 5 s = RspTms after the step to 49.80 Hz
        model.step(0.1, 49.80)
    assert model.droop_w == pytest.approx(-0.9 * 656.0, rel=1e-6)


def test_disabled_droop_changes_nothing() -> None:
    model = InverterModel(ratings=SYMMETRIC)
    model.write_setpoint(True, 2_000)
    for _ in range(300):
        model.step(0.1, 49.50)
    assert model.power_w == pytest.approx(2_000)
    assert model.droop_w == 0.0


def test_droop_adds_to_the_setpoint_and_the_total_is_clipped() -> None:
    model = InverterModel(ratings=SYMMETRIC, droop_enabled=True)
    model.write_setpoint(True, -1_000)  # discharging 1 kW already
    for _ in range(600):
        model.step(0.1, 49.80)
    assert model.power_w == pytest.approx(-1_656.0)
    model.write_setpoint(True, -9_800)  # 9.8 kW + 656 W is beyond the 10 kW rating
    for _ in range(100):
        model.step(0.1, 49.80)
    assert model.power_w == pytest.approx(-10_000.0)


def test_droop_discharge_stops_at_the_soc_stop_point() -> None:
    ratings = InverterRatings(soc_stop_min_pct=10.0)
    model = InverterModel(ratings=ratings, soc_pct=10.0, droop_enabled=True)
    for _ in range(300):
        model.step(0.1, 49.50)
    assert model.power_w == 0.0


def _device_711() -> SimulatedInverter:
    return SimulatedInverter(InverterModel(ratings=SYMMETRIC), serial="D1")


def test_711_sits_after_704_with_one_ieee_1547_curve_disabled() -> None:
    device = _device_711()
    assert device.model_address(711) == device.model_address(704) + 2 + load_model(704).length
    assert device.model_address(711) == 40344
    assert device.read(40344, 2) == [711, 22]
    values = {
        name: device.decode_point(711, name)
        for name in ("Ena", "NCtl", "Db_SF", "K_SF", "RspTms_SF", "AdptCtlReq", "AdptCtlRslt")
    }
    assert values == {
        "Ena": 0,
        "NCtl": 1,
        "Db_SF": -3,
        "K_SF": -3,
        "RspTms_SF": -1,
        "AdptCtlReq": 1,
        "AdptCtlRslt": 1,
    }
    curve = {
        name: device.decode_point(711, f"Ctl[0].{name}")
        for name in ("DbOf", "DbUf", "KOf", "KUf", "RspTms", "ReadOnly")
    }
    assert curve == {"DbOf": 36, "DbUf": 36, "KOf": 50, "KUf": 50, "RspTms": 50, "ReadOnly": 0}


def test_711_enable_over_modbus_pdu_makes_the_device_droop() -> None:
    device = _device_711()
    ena = device.address_of(711, "Ena")
    assert device.handle_pdu(1, struct.pack(">BHH", 6, ena, 1)) == struct.pack(">BHH", 6, ena, 1)
    assert device.model.droop_enabled
    for _ in range(600):
        device.step(0.1, 49.80)
    assert device.decode_point(701, "W") == 656  # SunSpec: + injection
    assert device.decode_point(701, "Hz") == 49_800


def test_711_curve_write_reaches_the_model_with_its_scale_factors() -> None:
    device = _device_711()
    db_of = device.address_of(711, "Ctl[0].DbOf")
    # DbOf 0.1 Hz, DbUf 0.2 Hz, KOf 0.04, KUf 0.06, RspTms 2.5 s
    reply = device.handle_pdu(1, _fc16(db_of, [0, 100, 0, 200, 40, 60, 0, 25]))
    assert reply == struct.pack(">BHH", 16, db_of, 8)
    m = device.model
    assert (m.droop.db_of_hz, m.droop.db_uf_hz) == pytest.approx((0.1, 0.2))
    assert (m.droop.k_of, m.droop.k_uf) == pytest.approx((0.04, 0.06))
    assert m.droop.response_time_s == pytest.approx(2.5)


def test_711_zero_droop_is_illegal_data_value_and_changes_nothing() -> None:
    device = _device_711()
    kuf = device.address_of(711, "Ctl[0].KUf")
    assert device.handle_pdu(1, struct.pack(">BHH", 6, kuf, 0)) == bytes((0x86, ILLEGAL_DATA_VALUE))
    assert device.decode_point(711, "Ctl[0].KUf") == 50
    assert device.model.droop.k_uf == pytest.approx(0.05)


def test_711_read_only_points_refuse_writes() -> None:
    device = _device_711()
    for name in ("NCtl", "K_SF", "Ctl[0].ReadOnly", "AdptCtlRslt", "RvrtTms"):
        address = device.address_of(711, name)
        reply = device.handle_pdu(1, struct.pack(">BHH", 6, address, 1))
        assert reply == bytes((0x86, ILLEGAL_DATA_ADDRESS)), name


def test_711_adopting_the_one_writable_set_completes_and_changes_nothing_else() -> None:
    device = _device_711()
    req = device.address_of(711, "AdptCtlReq")
    assert device.handle_pdu(1, struct.pack(">BHH", 6, req, 1)) == struct.pack(">BHH", 6, req, 1)
    assert device.decode_point(711, "AdptCtlRslt") == 1  # COMPLETED
    assert device.model.droop == DroopParams()


def test_711_adopt_request_beyond_nctl_is_illegal_data_value() -> None:
    device = _device_711()
    req = device.address_of(711, "AdptCtlReq")
    assert device.handle_pdu(1, struct.pack(">BHH", 6, req, 2)) == bytes((0x86, ILLEGAL_DATA_VALUE))
    assert device.decode_point(711, "AdptCtlReq") == 1


def test_711_adopt_zero_means_no_active_control_so_no_droop() -> None:
    device = _device_711()
    device.write_registers(device.address_of(711, "Ena"), [1])
    assert device.model.droop_enabled
    device.write_registers(device.address_of(711, "AdptCtlReq"), [0])
    assert not device.model.droop_enabled
    assert device.decode_point(711, "Ena") == 1


def _device_two_sets() -> SimulatedInverter:
    return SimulatedInverter(InverterModel(ratings=SYMMETRIC), serial="D2", droop_controls=2)


def test_711_with_two_sets_the_factory_set_is_read_only_and_the_second_writable() -> None:
    device = _device_two_sets()
    assert device.decode_point(711, "NCtl") == 2
    assert device.decode_point(711, "Ctl[0].ReadOnly") == 1  # R
    assert device.decode_point(711, "Ctl[1].ReadOnly") == 0  # RW
    factory = device.address_of(711, "Ctl[0].KOf")
    assert device.handle_pdu(1, struct.pack(">BHH", 6, factory, 40)) == bytes(
        (0x86, ILLEGAL_DATA_ADDRESS)
    )


def test_711_a_stored_set_takes_effect_only_once_adopted() -> None:
    device = _device_two_sets()
    db_of = device.address_of(711, "Ctl[1].DbOf")
    # DbOf 0.1 Hz, DbUf 0.2 Hz, KOf 0.04, KUf 0.06, RspTms 2.5 s into the stored set
    assert device.write_registers(db_of, [0, 100, 0, 200, 40, 60, 0, 25]) is None
    assert device.model.droop == DroopParams()  # still the factory set
    assert device.write_registers(device.address_of(711, "AdptCtlReq"), [2]) is None
    assert device.decode_point(711, "AdptCtlRslt") == 1  # COMPLETED
    assert device.decode_point(711, "AdptCtlReq") == 2
    assert device.model.droop == pytest.approx(DroopParams(0.1, 0.2, 0.04, 0.06, 2.5))


def test_711_adopting_an_unusable_set_fails_and_the_previous_set_stays() -> None:
    device = _device_two_sets()
    kof = device.address_of(711, "Ctl[1].KOf")
    assert device.write_registers(kof, [0]) is None  # a stored set may hold anything
    assert device.write_registers(device.address_of(711, "AdptCtlReq"), [2]) is None
    assert device.decode_point(711, "AdptCtlRslt") == 2  # FAILED
    assert device.decode_point(711, "AdptCtlReq") == 1
    assert device.model.droop == DroopParams()


def test_reboot_puts_704_and_711_back_to_factory_and_keeps_the_battery() -> None:
    device = _device_711()
    device.write_registers(device.address_of(711, "Ena"), [1])
    device.write_registers(device.address_of(711, "Ctl[0].KUf"), [20])
    device.write_registers(device.address_of(704, "WSetEna"), [1])
    soc_pct = device.model.soc_pct = 42.0
    device.reboot()
    assert not device.model.droop_enabled
    assert device.model.droop == DroopParams()
    assert not device.model.setpoint_enabled
    assert device.decode_point(711, "Ena") == 0
    assert device.decode_point(711, "Ctl[0].KUf") == 50
    assert device.decode_point(704, "WSetEna") == 0
    assert device.model.soc_pct == soc_pct


# --------------------------------------------------------------------------- 704 reversion


def test_wmaxlimpct_reverts_after_its_reversion_time_without_a_new_write() -> None:
    model = InverterModel(ratings=RATINGS, wmax_lim_revert_timeout_s=2.0)
    model.write_wmax_lim(True, 30.0)
    _run(model, 1.5)
    assert (model.wmax_lim_enabled, model.wmax_lim_pct) == (True, 30.0)
    model.write_wmax_lim(True, 30.0)  # a new write restarts the timer
    _run(model, 1.5)
    assert model.wmax_lim_enabled
    _run(model, 1.0)
    assert (model.wmax_lim_enabled, model.wmax_lim_pct) == (False, 100.0)  # the defaults
    assert model.wmax_lim_revert_remaining_s == 0.0


def test_wmaxlimpct_without_reversion_time_holds() -> None:
    model = InverterModel(ratings=RATINGS)
    model.write_wmax_lim(True, 30.0)
    _run(model, 100.0)
    assert (model.wmax_lim_enabled, model.wmax_lim_pct) == (True, 30.0)


def test_wmaxlimpct_reversion_over_modbus_pdu_reads_back_the_reverted_limit() -> None:
    device = _device()
    rvrt = device.address_of(704, "WMaxLimPctRvrt")
    assert device.address_of(704, "WMaxLimPctEnaRvrt") == rvrt + 1
    assert device.address_of(704, "WMaxLimPctRvrtTms") == rvrt + 2
    # revert to an enabled 80 % limit after 1 s
    assert device.handle_pdu(1, _fc16(rvrt, [800, 1, 0, 1]))[0] == 16
    ena = device.address_of(704, "WMaxLimPctEna")
    assert device.handle_pdu(1, _fc16(ena, [1, 200]))[0] == 16  # 20 %
    assert device.model.wmax_lim_pct == pytest.approx(20.0)
    assert device.decode_point(704, "WMaxLimPctRvrtRem") == 1
    for _ in range(11):
        device.step(0.1, 50.0)
    assert device.decode_point(704, "WMaxLimPct") == 800
    assert device.decode_point(704, "WMaxLimPctEna") == 1
    assert device.decode_point(704, "WMaxLimPctRvrtRem") == 0
    assert device.model.wmax_lim_pct == pytest.approx(80.0)
