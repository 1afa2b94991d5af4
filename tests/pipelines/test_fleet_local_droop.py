"""The dispatcher with local droop: commands carry the base, the summary the expected response."""

from __future__ import annotations

from numpy.testing import assert_allclose

from gridflex.contract import SiteSummary
from pipelines.fleet import SiteDispatcher
from tests.pipelines.test_fleet import T0, commands, settings, upd


def local() -> SiteDispatcher:
    return SiteDispatcher(settings(local_droop=True, min_step_w=100.0, refresh_ms=5000))


def test_a_frequency_step_sends_no_droop_delta_only_the_base_naming_local_droop() -> None:
    d = local()
    first = commands(d.on_update(upd("a", T0, 50.0, base_w=2_000.0)))
    assert first[0].setpoint_w == 2_000.0
    assert first[0].reason.startswith("base +2000 W, local droop on the device")
    # 49.80 Hz: the device itself adds -656 W; the pipeline must not add it again
    assert commands(d.on_update(upd("a", T0 + 200, 49.80, base_w=2_000.0))) == []


def test_the_reason_names_the_response_the_device_is_expected_to_give() -> None:
    d = local()
    out = commands(d.on_update(upd("a", T0, 49.80)))
    assert out[0].setpoint_w == 0.0
    assert out[0].mode == "droop"
    assert out[0].freq_hz == 49.8
    assert out[0].reason == ("base +0 W, local droop on the device: expected -656 W at f=49.800 Hz")


def test_keep_alives_carry_the_base_so_the_device_reversion_timer_stays_fed() -> None:
    d = local()
    stream = [upd("a", T0 + k * 200, 49.80 - 0.01 * (k % 7)) for k in range(60)]  # 12 s
    sent = [c for u in stream for c in commands(d.on_update(u))]
    assert [c.ts_ms for c in sent] == [T0, T0 + 5000, T0 + 10_000]
    assert {c.setpoint_w for c in sent} == {0.0}
    assert all(c.reason.startswith("keep-alive; base +0 W, local droop") for c in sent[1:])


def test_a_base_move_is_commanded_as_before() -> None:
    d = local()
    d.on_update(upd("a", T0, 49.80, base_w=0.0))
    moved = commands(d.on_update(upd("a", T0 + 200, 49.80, base_w=-3_000.0)))
    assert moved[0].setpoint_w == -3_000.0


def test_the_summary_shows_the_expected_device_response_within_the_envelope() -> None:
    d = local()
    d.on_update(upd("a", T0, 49.80))
    d.on_update(upd("b", T0, 49.80, min_w=-300.0))  # near its SoC floor: 300 W at most
    summary = d.summary(T0 + 10)
    assert isinstance(summary, SiteSummary)
    assert_allclose(summary.requested_w, -2 * 656.0, atol=0.1)
    assert_allclose(summary.allocated_w, -656.0 - 300.0, atol=0.1)
    assert_allclose(summary.shortfall_w, 356.0, atol=0.1)


def test_an_asset_without_any_frequency_still_gets_its_base_and_keep_alive() -> None:
    d = local()
    out = commands(d.on_update(upd("ev", T0, None, base_w=1_000.0)))
    assert out[0].setpoint_w == 1_000.0
    assert out[0].freq_hz is None
    assert out[0].reason == "base +1000 W, local droop on the device (no frequency)"


def test_without_local_droop_the_same_step_still_commands_the_droop() -> None:
    d = SiteDispatcher(settings(min_step_w=100.0))
    d.on_update(upd("a", T0, 50.0))
    out = commands(d.on_update(upd("a", T0 + 200, 49.80)))
    assert_allclose(out[0].setpoint_w, -656.0)
