"""The safety clamp: golden tables, one row per case, and Hypothesis properties.

Asset for the tables unless a row says otherwise: an 11 kW charge / 10 kW discharge
bidirectional charger, SoC stop points 20 % and 90 %, no ramp, no profile, no derating.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from control.clamp import (
    MAX_CAPACITY_REACHED,
    UNLIMITED_SITE,
    Clamped,
    Limits,
    SiteHeadroom,
    clamp,
    safe_window_w,
)

BASE = Limits(max_charge_w=11_000.0, max_discharge_w=10_000.0, soc_min_pct=20.0, soc_max_pct=90.0)
RAMP = replace(BASE, ramp_w_per_s=1_000.0)
HOT = replace(BASE, derate=0.5)
PROFILE = replace(BASE, profile_max_charge_w=7_400.0, profile_max_discharge_w=3_000.0)


class Row(NamedTuple):
    requested_w: float
    limits: Limits
    soc_pct: float | None
    previous_w: float | None
    elapsed_s: float | None
    site: SiteHeadroom
    faulted: str | None
    applied_w: float | None
    result: str
    rules: tuple[str, ...]


def _run(row: Row) -> Clamped:
    return clamp(
        row.requested_w,
        limits=row.limits,
        soc_pct=row.soc_pct,
        previous_w=row.previous_w,
        elapsed_s=row.elapsed_s,
        site=row.site,
        faulted=row.faulted,
    )


U = UNLIMITED_SITE

# fmt: off
GOLDEN = {
    # --- nothing bites ---------------------------------------------------------------------
    "charge inside":       Row(5_000.0, BASE, 50.0, None, None, U, None, 5_000.0, "applied", ()),   # as asked  # noqa: E501
    "discharge inside":   Row(-5_000.0, BASE, 50.0, None, None, U, None, -5_000.0, "applied", ()),  # as asked  # noqa: E501
    "zero":               Row(0.0, BASE, None, None, None, U, None, 0.0, "applied", ()),              # 0 needs no SoC  # noqa: E501
    "at the rating":      Row(11_000.0, BASE, 50.0, None, None, U, None, 11_000.0, "applied", ()),  # exactly 11 kW  # noqa: E501
    # --- fault -----------------------------------------------------------------------------
    "ground fault":       Row(-5_000.0, BASE, 50.0, -5_000.0, 0.2, U, "Error 0x04", 0.0, "clamped", ("fault",)),  # 0 W now, no ramp  # noqa: E501
    "grid sync":          Row(7_000.0, RAMP, 50.0, 7_000.0, 0.2, U, "Grid_Sync_Error", 0.0, "clamped", ("fault",)),  # ramp would allow 6.8 kW; fault wins  # noqa: E501
    "fault at zero":      Row(0.0, BASE, 50.0, 0.0, 1.0, U, "device lost", 0.0, "clamped", ("fault",)),  # still named  # noqa: E501
    "fault beats site":   Row(5_000.0, BASE, 50.0, None, None, SiteHeadroom(0.0, 0.0), "Error 0x04", 0.0, "clamped", ("fault",)),  # 0 W, not refused  # noqa: E501
    # --- rating / derating -----------------------------------------------------------------
    "over charge rating":    Row(22_000.0, BASE, 50.0, None, None, U, None, 11_000.0, "clamped", ("rating",)),   # 11 kW  # noqa: E501
    "over discharge rating": Row(-15_000.0, BASE, 50.0, None, None, U, None, -10_000.0, "clamped", ("rating",)),  # -10 kW  # noqa: E501
    "derated charge":        Row(8_000.0, HOT, 50.0, None, None, U, None, 5_500.0, "clamped", ("derating",)),    # 11 kW * 0.5  # noqa: E501
    "derated discharge":     Row(-8_000.0, HOT, 50.0, None, None, U, None, -5_000.0, "clamped", ("derating",)),  # -10 kW * 0.5  # noqa: E501
    "over both":             Row(20_000.0, HOT, 50.0, None, None, U, None, 5_500.0, "clamped", ("rating", "derating")),  # 11 kW then 5.5 kW  # noqa: E501
    "derate inside":         Row(5_000.0, HOT, 50.0, None, None, U, None, 5_000.0, "applied", ()),         # 5 kW < 5.5 kW  # noqa: E501
    "fully derated":         Row(1_000.0, replace(BASE, derate=0.0), 50.0, None, None, U, None, 0.0, "clamped", ("derating",)),  # 0 W  # noqa: E501
    # --- profile ---------------------------------------------------------------------------
    "profile charge":     Row(10_000.0, PROFILE, 50.0, None, None, U, None, 7_400.0, "clamped", ("profile",)),   # 32 A x 230 V  # noqa: E501
    "profile discharge":  Row(-5_000.0, PROFILE, 50.0, None, None, U, None, -3_000.0, "clamped", ("profile",)),  # dischargeLimit 3 kW  # noqa: E501
    "rating + profile":   Row(-12_000.0, PROFILE, 50.0, None, None, U, None, -3_000.0, "clamped", ("rating", "profile")),  # -10 kW then -3 kW  # noqa: E501
    "profile looser":     Row(10_500.0, replace(BASE, profile_max_charge_w=22_000.0), 50.0, None, None, U, None, 10_500.0, "applied", ()),  # noqa: E501
    # --- SoC stop points -------------------------------------------------------------------
    "at the floor":       Row(-5_000.0, BASE, 20.0, None, None, U, None, 0.0, "clamped", ("soc_floor",)),   # no discharge at 20 %  # noqa: E501
    "below the floor":    Row(-5_000.0, BASE, 12.0, None, None, U, None, 0.0, "clamped", ("soc_floor",)),   # noqa: E501
    "charge at floor":    Row(5_000.0, BASE, 12.0, None, None, U, None, 5_000.0, "applied", ()),             # charging allowed  # noqa: E501
    "above the floor":    Row(-5_000.0, BASE, 20.1, None, None, U, None, -5_000.0, "applied", ()),
    "at the ceiling":     Row(5_000.0, BASE, 90.0, None, None, U, None, 0.0, "clamped", ("soc_ceiling",)),   # no charge at 90 %  # noqa: E501
    "discharge at ceiling": Row(-5_000.0, BASE, 95.0, None, None, U, None, -5_000.0, "applied", ()),
    "soc unknown":        Row(-5_000.0, BASE, None, None, None, U, None, 0.0, "clamped", ("soc_unknown",)),  # noqa: E501
    "soc unknown charge": Row(5_000.0, BASE, None, None, None, U, None, 5_000.0, "applied", ()),
    "rating + floor":     Row(-20_000.0, BASE, 10.0, None, None, U, None, 0.0, "clamped", ("rating", "soc_floor")),  # noqa: E501
    # --- ramp (1 kW/s) ---------------------------------------------------------------------
    "ramp up":            Row(5_000.0, RAMP, 50.0, 0.0, 0.2, U, None, 200.0, "clamped", ("ramp",)),          # 1 kW/s x 0.2 s  # noqa: E501
    "ramp down":          Row(-5_000.0, RAMP, 50.0, 1_000.0, 1.0, U, None, 0.0, "clamped", ("ramp",)),       # 1 kW - 1 kW  # noqa: E501
    "ramp inside":        Row(1_500.0, RAMP, 50.0, 1_000.0, 1.0, U, None, 1_500.0, "applied", ()),           # step 500 W  # noqa: E501
    "first command":      Row(5_000.0, RAMP, 50.0, None, None, U, None, 5_000.0, "applied", ()),             # nothing to ramp from  # noqa: E501
    "no time passed":     Row(5_000.0, RAMP, 50.0, 3_000.0, 0.0, U, None, 3_000.0, "clamped", ("ramp",)),    # hold  # noqa: E501
    "clock went back":    Row(5_000.0, RAMP, 50.0, 3_000.0, -1.0, U, None, 3_000.0, "clamped", ("ramp",)),   # as 0 s  # noqa: E501
    "ceiling beats ramp": Row(5_000.0, RAMP, 90.0, 8_000.0, 0.2, U, None, 0.0, "clamped", ("soc_ceiling",)),  # stop now, not 7.8 kW  # noqa: E501
    "derate beats ramp":  Row(11_000.0, replace(RAMP, derate=0.5), 50.0, 11_000.0, 0.2, U, None, 5_500.0, "clamped", ("derating",)),  # noqa: E501
    "rating + ramp":      Row(30_000.0, RAMP, 50.0, 9_000.0, 1.0, U, None, 10_000.0, "clamped", ("rating", "ramp")),  # 11 kW, then 9+1 kW  # noqa: E501
    # --- site (refused, not clamped) -------------------------------------------------------
    "site import":        Row(8_000.0, BASE, 50.0, None, None, SiteHeadroom(6_000.0, None), None, None, "rejected", ("site",)),  # noqa: E501
    "site export":        Row(-8_000.0, BASE, 50.0, None, None, SiteHeadroom(None, 6_000.0), None, None, "rejected", ("site",)),  # noqa: E501
    "site at headroom":   Row(6_000.0, BASE, 50.0, None, None, SiteHeadroom(6_000.0, 0.0), None, 6_000.0, "applied", ()),  # exactly 6 kW  # noqa: E501
    "site other way":     Row(-8_000.0, BASE, 50.0, None, None, SiteHeadroom(0.0, None), None, -8_000.0, "applied", ()),  # no import  # noqa: E501
    "clamped under site": Row(20_000.0, BASE, 50.0, None, None, SiteHeadroom(12_000.0, None), None, 11_000.0, "clamped", ("rating",)),  # 11 kW fits  # noqa: E501
    "clamped over site":  Row(20_000.0, BASE, 50.0, None, None, SiteHeadroom(9_000.0, None), None, None, "rejected", ("rating", "site")),  # 11 kW > 9 kW  # noqa: E501
    "soc saves the site": Row(8_000.0, BASE, 95.0, None, None, SiteHeadroom(0.0, 0.0), None, 0.0, "clamped", ("soc_ceiling",)),  # 0 W fits  # noqa: E501
}
# fmt: on


@pytest.mark.parametrize("row", GOLDEN.values(), ids=GOLDEN.keys())
def test_golden(row: Row) -> None:
    out = _run(row)
    assert out.requested_w == row.requested_w
    assert out.result == row.result
    assert out.rules == row.rules
    if row.applied_w is None:
        assert out.applied_w is None
    else:
        assert out.applied_w == pytest.approx(row.applied_w)


def test_reasons() -> None:
    site = _run(GOLDEN["site import"])
    assert site.reason == MAX_CAPACITY_REACHED
    assert _run(GOLDEN["ground fault"]).reason == "Error 0x04"
    assert _run(GOLDEN["rating + profile"]).reason == "clamped by rating, profile"
    assert _run(GOLDEN["charge inside"]).reason is None


def test_a_clamped_discharge_reads_as_plain_zero() -> None:
    out = _run(GOLDEN["at the floor"])
    assert out.applied_w is not None
    assert math.copysign(1.0, out.applied_w) == 1.0


def test_not_finite_is_rejected() -> None:
    out = clamp(
        math.nan, limits=BASE, soc_pct=50.0, previous_w=None, elapsed_s=None, site=U, faulted=None
    )
    assert (out.result, out.applied_w) == ("rejected", None)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_charge_w": -1.0},
        {"derate": 1.5},
        {"soc_min_pct": 95.0},
        {"ramp_w_per_s": -10.0},
        {"profile_max_discharge_w": math.nan},
    ],
)
def test_limits_refuse_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs)).split("_pct")[0]):
        replace(BASE, **kwargs)


def test_site_refuses_negative_headroom() -> None:
    with pytest.raises(ValueError, match="import_w"):
        SiteHeadroom(import_w=-1.0, export_w=None)


# --- properties -------------------------------------------------------------------------------

POWER_W = st.floats(min_value=-50_000.0, max_value=50_000.0, allow_nan=False)
RATING_W = st.floats(min_value=0.0, max_value=30_000.0)


@st.composite
def limits_st(draw: st.DrawFn) -> Limits:
    soc_min = draw(st.floats(min_value=0.0, max_value=100.0))
    soc_max = draw(st.floats(min_value=soc_min, max_value=100.0))
    return Limits(
        max_charge_w=draw(RATING_W),
        max_discharge_w=draw(RATING_W),
        soc_min_pct=soc_min,
        soc_max_pct=soc_max,
        ramp_w_per_s=draw(st.none() | st.floats(min_value=0.0, max_value=20_000.0)),
        derate=draw(st.floats(min_value=0.0, max_value=1.0)),
        profile_max_charge_w=draw(st.none() | RATING_W),
        profile_max_discharge_w=draw(st.none() | RATING_W),
    )


SOC = st.none() | st.floats(min_value=0.0, max_value=100.0)
PREVIOUS = st.none() | POWER_W
ELAPSED = st.none() | st.floats(min_value=0.0, max_value=10.0)
SITE = st.builds(SiteHeadroom, st.none() | RATING_W, st.none() | RATING_W)
TOL_W = 1e-6


class Case(NamedTuple):
    """One cycle's inputs to the clamp, but the request and the fault."""

    limits: Limits
    soc_pct: float | None
    previous_w: float | None
    elapsed_s: float | None
    site: SiteHeadroom

    def clamp(self, requested_w: float, faulted: str | None = None) -> Clamped:
        return clamp(
            requested_w,
            limits=self.limits,
            soc_pct=self.soc_pct,
            previous_w=self.previous_w,
            elapsed_s=self.elapsed_s,
            site=self.site,
            faulted=faulted,
        )


CASES = st.builds(Case, limits_st(), SOC, PREVIOUS, ELAPSED, SITE)


@given(POWER_W, CASES)
def test_applied_lies_within_every_limit(requested_w: float, case: Case) -> None:
    limits, soc_pct, previous_w, elapsed_s, site = case
    out = case.clamp(requested_w)
    if out.result == "rejected":
        assert out.applied_w is None
        assert out.rules[-1] == "site"
        return
    value_w = out.applied_w
    assert value_w is not None
    assert -limits.max_discharge_w * limits.derate - TOL_W <= value_w
    assert value_w <= limits.max_charge_w * limits.derate + TOL_W
    if limits.profile_max_charge_w is not None:
        assert value_w <= limits.profile_max_charge_w + TOL_W
    if limits.profile_max_discharge_w is not None:
        assert value_w >= -limits.profile_max_discharge_w - TOL_W
    if soc_pct is None or soc_pct <= limits.soc_min_pct:
        assert value_w >= 0.0
    if soc_pct is not None and soc_pct >= limits.soc_max_pct:
        assert value_w <= 0.0
    if site.import_w is not None:
        assert value_w <= site.import_w
    if site.export_w is not None:
        assert value_w >= -site.export_w
    low_w, high_w = safe_window_w(limits, soc_pct)
    if (
        limits.ramp_w_per_s is not None
        and previous_w is not None
        and elapsed_s is not None
        and low_w <= previous_w <= high_w  # outside it, the safe window wins over the ramp
    ):
        step_w = limits.ramp_w_per_s * elapsed_s
        assert abs(value_w - previous_w) <= step_w * (1 + 1e-9) + TOL_W
    assert (out.result == "applied") == (out.rules == ())
    if out.result == "applied":
        assert value_w == requested_w


@given(POWER_W, CASES)
def test_clamping_a_clamped_value_changes_nothing(requested_w: float, case: Case) -> None:
    once = case.clamp(requested_w)
    assume(once.applied_w is not None)
    assert once.applied_w is not None
    twice = case.clamp(once.applied_w)
    assert twice.applied_w == once.applied_w
    assert twice.result == "applied"


@given(POWER_W, CASES, st.sampled_from(["Error 0x04", "Grid_Sync_Error", "device lost"]))
def test_a_fault_always_gives_zero(requested_w: float, case: Case, faulted: str) -> None:
    out = case.clamp(requested_w, faulted)
    assert (out.applied_w, out.result, out.rules, out.reason) == (
        0.0,
        "clamped",
        ("fault",),
        faulted,
    )
