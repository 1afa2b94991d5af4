"""Dispatch in the dataflow, from TestingSource to TestingSink, on one and on two workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from numpy.testing import assert_allclose

from gridflex.config import SiteConfig, parse_site
from gridflex.contract import DeadLetter, DispatchCommand, Forecast, SiteSummary, parse_payload
from gridflex.history import connect
from pipelines.validate import RawMessage
from pipelines.windows import Heartbeat
from tests.pipelines.helpers import T0_MS, raw, telemetry
from tests.pipelines.test_flow import run

ASSETS = ["inv-1", "inv-2", "inv-3"]


def dispatch_site(mode: str, **dispatch: Any) -> SiteConfig:
    doc: dict[str, Any] = {
        "site": {"id": "s1", "nominal_frequency_hz": 50},
        "dispatch": {"mode": mode, "min_step_w": 50, **dispatch},
        "assets": [
            {
                "id": a,
                "kind": "inverter",
                "host": "127.0.0.1",
                "unit_id": i + 1,
                "max_charge_w": 10_000,
                "max_discharge_w": 10_000,
                "capacity_wh": 60_000,
            }
            for i, a in enumerate(ASSETS)
        ],
    }
    return parse_site(doc)


def readings(*, step_at_ms: int, seconds: int = 4, after_hz: float = 49.8) -> list[RawMessage]:
    out = []
    for i in range(seconds * 5):
        ts = T0_MS + i * 200
        for a in ASSETS:
            freq = 50.0 if ts < step_at_ms else after_hz
            out.append(raw(telemetry(a, ts, i, freq_hz=freq, soc_pct=50.0, power_w=0.0)))
    return out


def of_type(out: list[tuple[str, bytes]], leaf: str) -> list[Any]:
    return [parse_payload(p) for t, p in out if t.endswith(leaf)]


@pytest.mark.parametrize("workers", [1, 2])
def test_droop_commands_follow_the_frequency_step_on_every_asset(
    tmp_path: Path, workers: int
) -> None:
    step = T0_MS + 2000
    out = run(
        list(readings(step_at_ms=step)), tmp_path, workers=workers, site=dispatch_site("droop")
    )
    cmds: list[DispatchCommand] = of_type(out, "/command")
    assert {c.asset for c in cmds} == set(ASSETS)
    for asset in ASSETS:
        mine = sorted((c for c in cmds if c.asset == asset), key=lambda c: c.ts_ms)
        # first reading: the base (0 W); the first reading at 49.80 Hz: -656 W, at once
        assert mine[0].setpoint_w == 0.0
        assert mine[0].ts_ms == T0_MS
        assert mine[1].ts_ms == step
        assert_allclose(mine[1].setpoint_w, -656.0)
        assert len(mine) == 2  # nothing else moved by min_step_w, no keep-alive within 5 s
    # the commands view holds what was published, one row per id
    con = connect(tmp_path)
    rows = con.execute("select command_id, setpoint_w, mode from commands").fetchall()
    assert {r[0] for r in rows} == {c.command_id for c in cmds}
    assert {r[2] for r in rows} == {"droop"}


def test_one_and_two_workers_issue_the_same_commands(tmp_path: Path) -> None:
    messages = readings(step_at_ms=T0_MS + 1000)
    one = of_type(run(list(messages), tmp_path / "1", site=dispatch_site("droop")), "/command")
    two = of_type(
        run(list(messages), tmp_path / "2", workers=2, site=dispatch_site("droop")), "/command"
    )
    assert sorted(c.command_id for c in one) == sorted(c.command_id for c in two)


def test_fcr_allocates_the_fleet_request_across_assets(tmp_path: Path) -> None:
    site = dispatch_site("fcr", fcr={"capacity_w": 12_000})
    out = run(list(readings(step_at_ms=T0_MS + 1000)), tmp_path, site=site)
    cmds: list[DispatchCommand] = of_type(out, "/command")
    last = {c.asset: c.setpoint_w for c in sorted(cmds, key=lambda c: c.ts_ms)}
    assert_allclose(sum(last.values()), -12_000.0, atol=1.0)  # full activation at -200 mHz
    assert all(c.mode == "fcr" for c in cmds)
    summaries: list[SiteSummary] = of_type(out, "/summary")
    assert summaries, "a summary at least once a second"
    assert summaries[-1].mode == "fcr"
    assert summaries[-1].assets_online == 3


def test_forecasts_are_published_once_a_second_per_asset_and_kept(tmp_path: Path) -> None:
    out = run(list(readings(step_at_ms=T0_MS + 10_000)), tmp_path, site=dispatch_site("off"))
    forecasts: list[Forecast] = of_type(out, "/forecast")
    per_asset = {a: [f for f in forecasts if f.asset == a] for a in ASSETS}
    assert all(len(v) == 4 for v in per_asset.values())  # 4 s of readings
    f = per_asset["inv-1"][0]
    assert f.needs_source == "battery"
    assert f.max_discharge_w > 0
    assert f.discharge_energy_wh > 0
    assert of_type(out, "/command") == []  # mode off: no commands
    con = connect(tmp_path)
    assert con.execute("select count(*) from forecasts").fetchall()[0][0] == 12


def test_deeply_nested_json_is_dead_lettered_and_the_stream_goes_on(tmp_path: Path) -> None:
    nested = b"[" * 20_000 + b"]" * 20_000
    messages: list[RawMessage | Heartbeat] = list(readings(step_at_ms=T0_MS + 1000))
    messages.insert(3, RawMessage("gridflex/v1/s1/inverter/inv-1/telemetry", nested, T0_MS))
    out = run(messages, tmp_path, site=dispatch_site("droop"))
    dead: list[DeadLetter] = [
        parse_payload(p)  # type: ignore[misc]
        for t, p in out
        if t == "gridflex/v1/deadletter/pipeline"
    ]
    assert len(dead) == 1
    assert dead[0].reason.startswith("not_json: not JSON: recursion limit exceeded")
    cmds = of_type(out, "/command")
    assert {c.asset for c in cmds} == set(ASSETS)  # readings after it were decided


def test_local_droop_commands_carry_the_base_and_the_summary_the_expected_response(
    tmp_path: Path,
) -> None:
    step = T0_MS + 1000
    site = dispatch_site("droop", local_droop=True)
    out = run(list(readings(step_at_ms=step)), tmp_path, site=site)
    cmds: list[DispatchCommand] = of_type(out, "/command")
    # the devices droop on their own: one base command per asset, no droop delta after the step
    assert sorted(c.asset for c in cmds) == ASSETS
    assert {c.setpoint_w for c in cmds} == {0.0}
    assert all("local droop on the device" in c.reason for c in cmds)
    summaries: list[SiteSummary] = of_type(out, "/summary")
    after = [s for s in summaries if s.freq_hz == 49.8]
    assert after, "a summary after the step"
    # what the three devices are expected to do at 49.80 Hz: -656 W each
    assert_allclose(after[-1].requested_w, -3 * 656.0, atol=1.0)
    assert_allclose(after[-1].allocated_w, -3 * 656.0, atol=1.0)
    assert after[-1].shortfall_w == 0.0
