"""The central's allocation of a fleet FCR capacity across sites."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from gridflex.central_alloc import SiteFlex, allocate_fcr, symmetric_flex_w

NOW = 1_000_000


def test_shares_are_proportional_to_symmetric_flexibility() -> None:
    sites = [
        SiteFlex("a", NOW, charge_w=10_000, discharge_w=4_000),  # holds 4 kW symmetric
        SiteFlex("b", NOW, charge_w=12_000, discharge_w=12_000),
    ]
    result = allocate_fcr(8_000, sites, now_ms=NOW, max_age_ms=5_000)
    assert result.shares_w == {"a": 2_000.0, "b": 6_000.0}
    assert result.allocated_w == 8_000
    assert result.shortfall_w == 0


def test_a_stale_site_gets_nothing_and_the_others_take_its_share() -> None:
    sites = [
        SiteFlex("a", NOW - 6_000, charge_w=10_000, discharge_w=10_000),
        SiteFlex("b", NOW, charge_w=10_000, discharge_w=10_000),
    ]
    result = allocate_fcr(6_000, sites, now_ms=NOW, max_age_ms=5_000)
    assert result.stale == ("a",)
    assert result.shares_w == {"b": 6_000.0}


def test_beyond_the_fleet_flexibility_every_site_holds_all_it_can() -> None:
    sites = [SiteFlex("a", NOW, 3_000, 3_000), SiteFlex("b", NOW, 1_000, 5_000)]
    result = allocate_fcr(10_000, sites, now_ms=NOW, max_age_ms=5_000)
    assert result.shares_w == {"a": 3_000.0, "b": 1_000.0}
    assert result.shortfall_w == 6_000


def test_energy_over_the_minimum_duration_limits_a_site() -> None:
    site = SiteFlex("a", NOW, 10_000, 10_000, energy_wh=1_000)
    assert symmetric_flex_w(site, min_duration_s=900) == 4_000  # 1 kWh over 15 min


flex = st.floats(min_value=0, max_value=1e6, allow_nan=False)
site_lists = st.lists(
    st.tuples(flex, flex, st.integers(min_value=0, max_value=20_000)), min_size=0, max_size=30
)


@settings(max_examples=200)
@given(capacity=flex, raw=site_lists)
def test_shares_sum_to_the_capacity_when_feasible_and_no_site_exceeds_its_flexibility(
    capacity: float, raw: list[tuple[float, float, int]]
) -> None:
    sites = [SiteFlex(f"s{i}", NOW - age, c, d) for i, (c, d, age) in enumerate(raw)]
    result = allocate_fcr(capacity, sites, now_ms=NOW, max_age_ms=10_000)
    fresh = [s for s in sites if NOW - s.ts_ms <= 10_000]
    assert set(result.shares_w) == {s.site for s in fresh}
    assert set(result.stale) == {s.site for s in sites} - set(result.shares_w)
    for s in fresh:
        share = result.shares_w[s.site]
        assert 0 <= share <= min(s.charge_w, s.discharge_w) * (1 + 1e-12)
    total_flex = sum(min(s.charge_w, s.discharge_w) for s in fresh)
    expected = min(capacity, total_flex)
    assert math.isclose(sum(result.shares_w.values()), expected, rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(result.allocated_w + result.shortfall_w, capacity, abs_tol=1e-6)
