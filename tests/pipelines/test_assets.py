"""The asset step: needs, defaults, envelope, derating, forecast cadence."""

from __future__ import annotations

from typing import Any

from numpy.testing import assert_allclose

from gridflex.contract import EvChargingNeeds, Telemetry
from pipelines.assets import AssetProfile, AssetTracker, CarDefaults, derate_factor, track
from pipelines.dispatch import DroopParams

T0 = 1_700_000_000_000
HOUR_MS = 3_600_000

INVERTER = AssetProfile("inv-1", "inverter", 10_000, 10_000, 60_000, 10, 90, 0.0, DroopParams())
EVSE = AssetProfile("cs-1", "evse", 11_000, 11_000, None, 10, 90, 0.0, DroopParams())


def reading(asset: str, kind: str, ts: int = T0, **kw: Any) -> Telemetry:
    fields: dict[str, Any] = {
        "site": "s1",
        "asset": asset,
        "kind": kind,
        "ts_ms": ts,
        "seq": (ts - T0) // 200,
        "boot": "b",
        "power_w": 0.0,
        "freq_hz": 50.0,
        "soc_pct": 50.0,
    }
    fields.update(kw)
    return Telemetry(**fields)


def run(
    t: Telemetry, profile: AssetProfile | None, state: AssetTracker | None = None
) -> tuple[AssetTracker, Any, Any]:
    return track(
        state,
        t,
        received_ms=t.ts_ms + 5,
        profile=profile,
        defaults=CarDefaults(),
        forecast_interval_ms=1000,
    )


def test_battery_inverter_can_discharge_to_its_floor() -> None:
    _, update, fc = run(reading("inv-1", "inverter"), INVERTER)
    assert update.min_w == -10_000
    assert update.max_w == 10_000
    assert fc.needs_source == "battery"
    # (50 - 10) % of 60 kWh above the floor
    assert_allclose(fc.discharge_energy_wh, 24_000)


def test_inverter_at_its_soc_floor_cannot_discharge() -> None:
    _, update, _ = run(reading("inv-1", "inverter", soc_pct=10.0), INVERTER)
    assert update.min_w == 0


def test_car_without_stated_needs_uses_site_defaults_and_is_charge_only() -> None:
    t = reading("cs-1", "evse", transaction_id="tx-1", status="charging")
    state, update, fc = run(t, EVSE)
    assert fc.needs_source == "site_default"
    assert fc.departure_ms == T0 + 8 * HOUR_MS  # first seen + dwell_h
    assert fc.target_soc_pct == 80
    assert fc.capacity_wh == 60_000
    assert fc.v2x is False
    assert update.min_w >= 0  # never a discharge from a car that did not say it may
    # the departure stays anchored at the first reading of the transaction
    _, _, later = run(reading("cs-1", "evse", T0 + 2000, transaction_id="tx-1"), EVSE, state)
    assert later.departure_ms == T0 + 8 * HOUR_MS


def test_v2x_car_with_needs_may_discharge_within_its_own_limit() -> None:
    needs = EvChargingNeeds(
        departure_ms=T0 + 10 * HOUR_MS,
        requested_energy_wh=20_000,
        target_soc_pct=80,
        max_charge_w=7_000,
        max_discharge_w=5_000,
        v2x=True,
    )
    t = reading("cs-1", "evse", transaction_id="tx-1", status="charging", ev=needs)
    _, update, fc = run(t, EVSE)
    assert fc.needs_source == "ev"
    assert fc.departure_ms == T0 + 10 * HOUR_MS
    assert_allclose(fc.capacity_wh, 20_000 * 100 / 30, atol=0.05)  # energy over 30 % of SoC
    assert update.max_w == 7_000  # the car's own charge limit, below the station's
    assert update.rated_discharge_w == 5_000
    assert -5_000 <= update.min_w < 0
    assert fc.v2x is True


def test_car_needs_persist_for_its_transaction_and_reset_with_the_next() -> None:
    needs = EvChargingNeeds(departure_ms=T0 + HOUR_MS, target_soc_pct=90, v2x=True)
    state, _, _ = run(reading("cs-1", "evse", transaction_id="tx-1", ev=needs), EVSE)
    state, _, fc = run(reading("cs-1", "evse", T0 + 1000, transaction_id="tx-1"), EVSE, state)
    assert fc.departure_ms == T0 + HOUR_MS
    state, _, fc = run(reading("cs-1", "evse", T0 + 2000, transaction_id="tx-2"), EVSE, state)
    assert fc.needs_source == "site_default"


def test_no_car_no_flexibility() -> None:
    _, update, fc = run(reading("cs-1", "evse", status="idle", soc_pct=None), EVSE)
    assert (update.min_w, update.max_w) == (0.0, 0.0)
    assert fc is None


def test_faulted_device_is_marked() -> None:
    _, update, _ = run(reading("inv-1", "inverter", status="fault"), INVERTER)
    assert update.faulted


def test_asset_not_in_the_site_file_is_not_dispatchable() -> None:
    _, update, fc = run(reading("inv-9", "inverter"), None)
    assert not update.dispatchable
    assert fc is None


def test_hot_connector_derates_the_envelope() -> None:
    assert derate_factor(80.0) == 0.5
    t = reading("cs-1", "evse", transaction_id="tx-1", temp_c=80.0)
    _, update, _ = run(t, EVSE)
    assert_allclose(update.rated_charge_w, 5_500)
    assert update.max_w <= 5_500


def test_forecast_at_most_once_per_interval() -> None:
    state = None
    published = []
    for k in range(11):  # 2 s of readings at 5 Hz
        state, _, fc = run(reading("inv-1", "inverter", T0 + k * 200), INVERTER, state)
        if fc is not None:
            published.append(fc.ts_ms - T0)
    assert published == [0, 1000, 2000]
