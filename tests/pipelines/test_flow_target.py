"""The central's target in the dataflow: its FCR capacity replaces the site's own."""

from __future__ import annotations

from pathlib import Path

from numpy.testing import assert_allclose

from gridflex.contract import DeadLetter, DispatchCommand, SiteTarget, target_topic
from pipelines.validate import RawMessage
from tests.pipelines.helpers import T0_MS
from tests.pipelines.test_flow import run
from tests.pipelines.test_flow_dispatch import dispatch_site, of_type, readings


def target(site: str, capacity_w: float, *, valid_until_ms: int) -> RawMessage:
    t = SiteTarget(
        site=site,
        ts_ms=T0_MS - 100,
        seq=1,
        fcr_capacity_w=capacity_w,
        fleet_fcr_capacity_w=3 * capacity_w,
        flex_w=30_000,
        valid_until_ms=valid_until_ms,
        reason="test",
    )
    return RawMessage(target_topic("s1"), t.to_json(), T0_MS - 50)


def last_setpoints_sum(out: list[tuple[str, bytes]]) -> float:
    cmds: list[DispatchCommand] = of_type(out, "/command")
    last = {c.asset: c.setpoint_w for c in sorted(cmds, key=lambda c: c.ts_ms)}
    return sum(last.values())


def test_a_valid_target_sets_the_fcr_capacity_the_site_shares_across_its_assets(
    tmp_path: Path,
) -> None:
    site = dispatch_site("fcr", fcr={"capacity_w": 12_000})
    messages = [target("s1", 6_000, valid_until_ms=T0_MS + 60_000)]
    out = run([*messages, *readings(step_at_ms=T0_MS + 1000)], tmp_path, site=site)
    assert_allclose(last_setpoints_sum(out), -6_000.0, atol=1.0)  # full activation


def test_an_expired_target_is_ignored_and_the_site_keeps_its_capacity(tmp_path: Path) -> None:
    site = dispatch_site("fcr", fcr={"capacity_w": 12_000})
    messages = [target("s1", 6_000, valid_until_ms=T0_MS - 60)]  # expired when it arrives
    out = run([*messages, *readings(step_at_ms=T0_MS + 1000)], tmp_path, site=site)
    assert_allclose(last_setpoints_sum(out), -12_000.0, atol=1.0)


def test_a_target_naming_another_site_is_dead_lettered(tmp_path: Path) -> None:
    site = dispatch_site("fcr", fcr={"capacity_w": 12_000})
    messages = [target("other", 6_000, valid_until_ms=T0_MS + 60_000)]
    out = run([*messages, *readings(step_at_ms=T0_MS + 1000)], tmp_path, site=site)
    letters: list[DeadLetter] = of_type(out, "/deadletter/pipeline")
    assert [d.topic for d in letters] == [target_topic("s1")]
    assert_allclose(last_setpoints_sum(out), -12_000.0, atol=1.0)
