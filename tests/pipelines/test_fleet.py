"""The site dispatcher: one decision per reading, min step, keep-alive, site frequency, FCR."""

from __future__ import annotations

import pickle
from dataclasses import replace

from numpy.testing import assert_allclose

from gridflex.contract import DispatchCommand, SiteSummary
from pipelines.dispatch import DroopParams
from pipelines.fleet import AssetUpdate, DispatchSettings, SiteDispatcher

T0 = 1_700_000_000_000


def upd(asset: str, ts: int, freq: float | None, **kw: object) -> AssetUpdate:
    base: dict[str, object] = {
        "asset": asset,
        "ts_ms": ts,
        "seq": (ts - T0) // 200,
        "boot": "b1",
        "received_ms": ts + 5,
        "freq_hz": freq,
        "power_w": 0.0,
        "base_w": 0.0,
        "min_w": -10_000.0,
        "max_w": 10_000.0,
        "rated_charge_w": 10_000.0,
        "rated_discharge_w": 10_000.0,
        "droop": DroopParams(),
    }
    base.update(kw)
    return AssetUpdate(**base)  # type: ignore[arg-type]


def commands(out: list[DispatchCommand | SiteSummary]) -> list[DispatchCommand]:
    return [o for o in out if isinstance(o, DispatchCommand)]


def settings(**kw: object) -> DispatchSettings:
    return replace(DispatchSettings(site="s1", nominal_hz=50.0, mode="droop"), **kw)  # type: ignore[arg-type]


def test_droop_decides_on_the_assets_own_reading_at_once() -> None:
    d = SiteDispatcher(settings())
    out = commands(d.on_update(upd("a", T0, 49.80)))
    assert len(out) == 1
    assert_allclose(out[0].setpoint_w, -656.0)
    assert out[0].mode == "droop"
    assert out[0].ts_ms == T0  # the reading that caused it
    assert out[0].issued_ms == T0 + 5
    assert out[0].valid_until_ms == T0 + 5 + 15_000
    assert "droop f=49.800 Hz" in out[0].reason


def test_droop_is_held_to_the_envelope_with_the_reason() -> None:
    d = SiteDispatcher(settings())
    # SoC floor reached: no discharge allowed
    out = commands(d.on_update(upd("a", T0, 49.80, min_w=0.0)))
    assert out[0].setpoint_w == 0.0
    assert "held to the envelope" in out[0].reason


def test_no_new_command_below_min_step_but_a_keep_alive_after_refresh() -> None:
    d = SiteDispatcher(settings(min_step_w=100.0, refresh_ms=5000))
    assert len(commands(d.on_update(upd("a", T0, 49.80)))) == 1  # -656 W
    # 49.79 Hz -> -696 W: 40 W away, below min step
    assert commands(d.on_update(upd("a", T0 + 200, 49.79))) == []
    # 49.75 Hz -> -856 W: moved 200 W
    moved = commands(d.on_update(upd("a", T0 + 400, 49.75)))
    assert_allclose(moved[0].setpoint_w, -856.0)
    # same frequency for 5 s: one keep-alive with the same setpoint and a new id
    quiet = [commands(d.on_update(upd("a", T0 + 400 + i * 200, 49.75))) for i in range(1, 26)]
    alive = [c for batch in quiet for c in batch]
    assert len(alive) == 1
    assert alive[0].setpoint_w == moved[0].setpoint_w
    assert alive[0].command_id != moved[0].command_id
    assert alive[0].ts_ms == T0 + 400 + 5000
    assert alive[0].reason.startswith("keep-alive")


def test_inside_the_dead_band_the_base_is_commanded_once() -> None:
    d = SiteDispatcher(settings())
    first = commands(d.on_update(upd("a", T0, 50.01, base_w=2_000.0)))
    assert first[0].setpoint_w == 2_000.0
    assert commands(d.on_update(upd("a", T0 + 200, 49.99, base_w=2_000.0))) == []


def test_faulted_and_unknown_assets_get_no_command() -> None:
    d = SiteDispatcher(settings())
    assert commands(d.on_update(upd("a", T0, 49.5, faulted=True))) == []
    assert commands(d.on_update(upd("x", T0, 49.5, dispatchable=False))) == []


def test_mode_off_decides_nothing_but_summarises() -> None:
    d = SiteDispatcher(settings(mode="off"))
    out = d.on_update(upd("a", T0, 49.5))
    assert commands(out) == []
    summary = [o for o in out if isinstance(o, SiteSummary)]
    assert summary[0].mode == "off"
    assert summary[0].assets_online == 1


def test_site_frequency_is_the_median_of_fresh_readings() -> None:
    d = SiteDispatcher(settings(mode="fcr", freq_max_age_ms=1000))
    for i, f in enumerate([49.9, 50.0, 50.1, 49.95]):
        d.on_update(upd(f"a{i}", T0, f))
    assert_allclose(d.site_freq_hz(), (49.95 + 50.0) / 2)
    # a reading 1.5 s later: the others are older than 1 s and drop out
    d.on_update(upd("a0", T0 + 1500, 49.7))
    assert_allclose(d.site_freq_hz(), 49.7)
    # the same asset again replaces its own value, never counts twice
    d.on_update(upd("a0", T0 + 1700, 49.8))
    assert_allclose(d.site_freq_hz(), 49.8)


def test_fcr_commands_follow_a_step_and_sum_to_the_request() -> None:
    s = settings(mode="fcr", fcr_capacity_w=6_000.0, min_step_w=1.0)
    d = SiteDispatcher(s)
    envelopes = {"a": (-10_000.0, 10_000.0), "b": (-5_000.0, 5_000.0), "c": (0.0, 11_000.0)}
    last: dict[str, float] = {}
    for k in range(6):  # 50.00 Hz for two rounds, then 49.80 Hz (full activation, discharge)
        ts = T0 + k * 200
        for asset, (low, high) in envelopes.items():
            freq = 50.0 if k < 2 else 49.80
            for c in commands(d.on_update(upd(asset, ts, freq, min_w=low, max_w=high))):
                last[c.asset] = c.setpoint_w
    # the median is at 49.80 once two of three report it; request -6 kW over 15 kW headroom
    assert_allclose(last["a"], -4_000.0, atol=0.1)
    assert_allclose(last["b"], -2_000.0, atol=0.1)
    assert last["c"] == 0.0  # charge-only car: no discharge
    assert_allclose(sum(last.values()), -6_000.0, atol=0.2)
    summary = d.summary(T0 + 2000)
    assert_allclose(summary.requested_w, -6_000.0)
    assert_allclose(summary.allocated_w, -6_000.0)
    assert summary.shortfall_w == 0.0
    assert summary.assets_online == 3


def test_fcr_shortfall_is_published_with_the_summary() -> None:
    d = SiteDispatcher(settings(mode="fcr", fcr_capacity_w=50_000.0, max_export_w=8_000.0))
    d.on_update(upd("a", T0, 49.7))
    d.on_update(upd("b", T0, 49.7))
    summary = d.summary(T0 + 10)
    assert_allclose(summary.requested_w, -50_000.0)
    assert_allclose(summary.allocated_w, -8_000.0)  # the transformer's export limit
    assert_allclose(summary.shortfall_w, 42_000.0)


def test_summary_at_least_once_per_interval_even_without_readings() -> None:
    d = SiteDispatcher(settings(summary_interval_ms=1000))
    first = [o for o in d.on_update(upd("a", T0, 50.0)) if isinstance(o, SiteSummary)]
    assert len(first) == 1
    assert d.on_tick(T0 + 500) == []
    later = d.on_tick(T0 + 1100)
    assert len(later) == 1
    assert isinstance(later[0], SiteSummary)
    assert later[0].seq == first[0].seq + 1


def test_same_inputs_give_the_same_commands_after_a_pickled_restart() -> None:
    stream = [upd(a, T0 + k * 200, 49.8 - 0.01 * k) for k in range(10) for a in ("a", "b")]
    whole = SiteDispatcher(settings())
    expected = [c.command_id for u in stream for c in commands(whole.on_update(u))]
    first = SiteDispatcher(settings())
    got = [c.command_id for u in stream[:7] for c in commands(first.on_update(u))]
    resumed: SiteDispatcher = pickle.loads(pickle.dumps(first))  # what recovery restores
    got += [c.command_id for u in stream[7:] for c in commands(resumed.on_update(u))]
    assert got == expected
    assert len(set(expected)) == len(expected)


def test_droop_decides_a_reading_that_arrives_behind_other_assets_newer_ones() -> None:
    # Bytewax can hand a backlog over grouped by asset: "b" arrives 5 s behind "a"
    d = SiteDispatcher(settings())
    for k in range(30):
        d.on_update(upd("a", T0 + k * 200, 49.8))
    late = commands(d.on_update(upd("b", T0, 49.8)))
    assert len(late) == 1
    assert_allclose(late[0].setpoint_w, -656.0)


def test_droop_without_an_own_measurement_uses_the_site_frequency() -> None:
    d = SiteDispatcher(settings())
    d.on_update(upd("inv", T0, 49.80))  # an inverter measures 49.80 Hz
    out = commands(d.on_update(upd("ev", T0 + 50, None)))  # a station reports no frequency
    assert_allclose(out[0].setpoint_w, -656.0)
    assert out[0].freq_hz == 49.8
    assert "site f=49.800 Hz" in out[0].reason


def test_assets_that_go_silent_leave_the_summary_after_the_fresh_age() -> None:
    d = SiteDispatcher(settings(freq_max_age_ms=1000))
    d.on_update(upd("a", T0, 50.0))  # received at T0 + 5
    d.on_update(upd("b", T0, 50.0))
    assert d.summary(T0 + 10).assets_online == 2
    d.on_tick(T0 + 600)
    assert d.summary(T0 + 600).assets_online == 2
    d.on_tick(T0 + 1100)  # nothing for more than 1 s
    gone = d.summary(T0 + 1100)
    assert gone.assets_online == 0
    assert gone.freq_hz is None


def test_a_departure_need_raises_the_base_and_the_reason_says_so() -> None:
    d = SiteDispatcher(settings())
    # inside the dead band, but the car must charge 4.2 kW to leave on time
    out = commands(d.on_update(upd("ev", T0, 50.01, min_w=4_200.0, max_w=11_000.0)))
    assert out[0].setpoint_w == 4_200.0
    assert "base +0 W held to the envelope 4200..11000 W" in out[0].reason


def test_fcr_leaves_a_faulted_asset_out_and_the_others_cover_its_share() -> None:
    d = SiteDispatcher(settings(mode="fcr", fcr_capacity_w=6_000.0, min_step_w=1.0))
    last: dict[str, float] = {}
    for k in range(3):
        for asset in ("a", "b", "hot"):
            u = upd(asset, T0 + k * 200, 49.80, faulted=asset == "hot")
            for c in commands(d.on_update(u)):
                last[c.asset] = c.setpoint_w
    assert "hot" not in last  # a faulted device gets no share (control forces it to 0 W)
    assert_allclose(last["a"] + last["b"], -6_000.0, atol=0.2)
    summary = d.summary(T0 + 600)
    assert_allclose(summary.allocated_w, -6_000.0)
    assert summary.flex_discharge_w == 20_000.0  # only the two healthy assets
