"""Charge profiles: validation, resolution of the limits in force, the SQLite store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from control.profiles import (
    ActiveLimits,
    ChargeProfile,
    ProfileStore,
    active_limits,
    next_change_ms,
)
from tests.control.api_helpers import T0_MS, iso, profile_body

H_MS = 3_600_000


def _profile(**changes: Any) -> ChargeProfile:
    return ChargeProfile.model_validate(profile_body(**changes))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProfileStore]:
    with ProfileStore(tmp_path / "profiles.sqlite3") as s:
        yield s


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"valid_to": iso(T0_MS)}, "valid_to"),  # not after valid_from
        ({"valid_to": iso(T0_MS - 1000)}, "valid_to"),
        ({"valid_from": "2026-05-28T20:26:40"}, "valid_from"),  # no time zone
        ({"valid_to": "tomorrow"}, "valid_to"),
        ({"max_charge_kw": -1}, "max_charge_kw"),
        ({"max_discharge_kw": -0.5}, "max_discharge_kw"),
        ({"max_charge_kw": float("nan")}, "max_charge_kw"),
        ({"soc_min_pct": 80, "soc_max_pct": 80}, "soc_max_pct"),  # min must be below max
        ({"soc_min_pct": 90, "soc_max_pct": 20}, "soc_max_pct"),
        ({"soc_max_pct": 100.5}, "soc_max_pct"),
        ({"soc_min_pct": -1}, "soc_min_pct"),
        ({"asset": "inv 001"}, "asset"),
        ({"profile_id": ""}, "profile_id"),
        ({"max_charge_w": 5000}, "max_charge_w"),  # unknown key: a unit typo is refused
        (
            {"periods": [{"start": 2 * 3600, "max_charge_kw": 1, "max_discharge_kw": 1}]},
            "periods",
        ),  # starts after valid_to
        (
            {"periods": [{"start": iso(T0_MS - 1), "max_charge_kw": 1, "max_discharge_kw": 1}]},
            "periods",
        ),  # starts before valid_from
        (
            {
                "periods": [
                    {"start": 600, "max_charge_kw": 1, "max_discharge_kw": 1},
                    {"start": 600, "max_charge_kw": 2, "max_discharge_kw": 1},
                ]
            },
            "periods",
        ),  # not strictly ordered
        ({"periods": [{"start": 0, "max_charge_kw": -1, "max_discharge_kw": 1}]}, "periods"),
    ],
)
def test_a_bad_profile_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        _profile(**changes)
    assert {err["loc"][0] for err in info.value.errors()} == {field}


def test_missing_fields_are_each_named() -> None:
    with pytest.raises(ValidationError) as info:
        ChargeProfile.model_validate({"asset": "inv-001"})
    assert {err["loc"][0] for err in info.value.errors()} == {
        "profile_id",
        "valid_from",
        "valid_to",
        "max_charge_kw",
        "max_discharge_kw",
        "soc_min_pct",
        "soc_max_pct",
    }


def test_instants_are_normalised_to_utc_for_comparison() -> None:
    a = _profile(valid_from="2026-05-28T20:26:40Z")
    b = _profile(valid_from="2026-05-28T22:26:40+02:00")
    assert a.canonical_json() == b.canonical_json()
    assert a.valid_from_ms == T0_MS


def test_period_start_as_offset_or_instant_gives_the_same_segments() -> None:
    by_offset = _profile(periods=[{"start": 600, "max_charge_kw": 2, "max_discharge_kw": 1}])
    by_instant = _profile(
        periods=[{"start": iso(T0_MS + 600_000), "max_charge_kw": 2, "max_discharge_kw": 1}]
    )
    assert by_offset.segments() == by_instant.segments()


def test_segments_cover_the_validity_and_periods_only_tighten() -> None:
    profile = _profile(
        max_charge_kw=5,
        max_discharge_kw=3,
        periods=[
            {"start": 600, "max_charge_kw": 2, "max_discharge_kw": 7},  # discharge: 3 stays
            {"start": 1800, "max_charge_kw": 9, "max_discharge_kw": 1},  # charge: 5 stays
        ],
    )
    assert [(s.start_ms - T0_MS, s.end_ms - T0_MS) for s in profile.segments()] == [
        (0, 600_000),
        (600_000, 1_800_000),
        (1_800_000, H_MS),
    ]
    assert [(s.max_charge_w, s.max_discharge_w) for s in profile.segments()] == [
        (5000.0, 3000.0),
        (2000.0, 3000.0),
        (5000.0, 1000.0),
    ]


# ---------------------------------------------------------------------------- limits in force


def test_no_profile_in_force_gives_none() -> None:
    profile = _profile()
    assert active_limits([profile], T0_MS - 1) is None
    assert active_limits([profile], T0_MS + H_MS) is None  # valid_to is excluded
    assert active_limits([], T0_MS) is None


def test_the_most_restrictive_of_the_profiles_in_force() -> None:
    a = _profile(profile_id="a", max_charge_kw=5, max_discharge_kw=3, soc_min_pct=20)
    b = _profile(
        profile_id="b",
        valid_from=iso(T0_MS + 1000),
        max_charge_kw=7,
        max_discharge_kw=2,
        soc_min_pct=10,
        soc_max_pct=70,
    )
    later = _profile(
        profile_id="later", valid_from=iso(T0_MS + 2 * H_MS), valid_to=iso(T0_MS + 3 * H_MS)
    )
    assert active_limits([a, b, later], T0_MS + 2000) == ActiveLimits(
        max_charge_w=5000.0,
        max_discharge_w=2000.0,
        soc_min_pct=20.0,
        soc_max_pct=70.0,
        profile_ids=("a", "b"),
        until_ms=T0_MS + H_MS,  # both end then
    )
    only_a = active_limits([a, b, later], T0_MS + 500)
    assert only_a is not None
    assert only_a.profile_ids == ("a",)
    assert only_a.until_ms == T0_MS + 1000  # b starts


def test_next_change_is_the_next_edge_of_any_profile() -> None:
    profile = _profile(periods=[{"start": 600, "max_charge_kw": 1, "max_discharge_kw": 1}])
    assert next_change_ms([profile], T0_MS - 5) == T0_MS
    assert next_change_ms([profile], T0_MS) == T0_MS + 600_000
    assert next_change_ms([profile], T0_MS + 600_000) == T0_MS + H_MS
    assert next_change_ms([profile], T0_MS + H_MS) is None


_kw = st.floats(min_value=0, max_value=50, allow_nan=False)


@st.composite
def _profiles(draw: st.DrawFn, index: int) -> ChargeProfile:
    start_s = draw(st.integers(min_value=0, max_value=3600))
    length_s = draw(st.integers(min_value=1, max_value=3600))
    soc_min = draw(st.floats(min_value=0, max_value=99, allow_nan=False))
    soc_max = draw(
        st.floats(min_value=soc_min, max_value=100, allow_nan=False).filter(lambda v: v > soc_min)
    )
    offsets = sorted(set(draw(st.lists(st.integers(0, length_s - 1), max_size=4))))
    return ChargeProfile.model_validate(
        {
            "asset": "inv-001",
            "profile_id": f"p{index}",
            "valid_from": iso(T0_MS + start_s * 1000),
            "valid_to": iso(T0_MS + (start_s + length_s) * 1000),
            "max_charge_kw": draw(_kw),
            "max_discharge_kw": draw(_kw),
            "soc_min_pct": soc_min,
            "soc_max_pct": soc_max,
            "periods": [
                {"start": o, "max_charge_kw": draw(_kw), "max_discharge_kw": draw(_kw)}
                for o in offsets
            ],
        }
    )


def _limit_at(profile: ChargeProfile, now_ms: int) -> tuple[float, float] | None:
    """Reference: the power limits of one profile at ``now_ms`` by a plain scan, W."""
    if not profile.valid_from_ms <= now_ms < profile.valid_to_ms:
        return None
    charge_w, discharge_w = profile.max_charge_kw * 1000, profile.max_discharge_kw * 1000
    for period in profile.periods:
        if period.start_ms(profile.valid_from) <= now_ms:
            charge_w = min(profile.max_charge_kw, period.max_charge_kw) * 1000
            discharge_w = min(profile.max_discharge_kw, period.max_discharge_kw) * 1000
    return charge_w, discharge_w


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    profiles=st.integers(1, 4).flatmap(lambda n: st.tuples(*(_profiles(i) for i in range(n)))),
    now_s=st.integers(min_value=-10, max_value=7300),
)
def test_active_is_never_looser_than_any_valid_profile(
    profiles: tuple[ChargeProfile, ...], now_s: int
) -> None:
    now_ms = T0_MS + now_s * 1000
    limits = active_limits(profiles, now_ms)
    in_force = {p.profile_id: _limit_at(p, now_ms) for p in profiles}
    valid = {pid: lim for pid, lim in in_force.items() if lim is not None}
    if not valid:
        assert limits is None
        return
    assert limits is not None
    assert set(limits.profile_ids) == set(valid)
    for profile in profiles:
        lim = valid.get(profile.profile_id)
        if lim is None:
            continue
        assert limits.max_charge_w <= lim[0]
        assert limits.max_discharge_w <= lim[1]
        assert limits.soc_min_pct >= profile.soc_min_pct
        assert limits.soc_max_pct <= profile.soc_max_pct
    # ... and no tighter than the tightest: exactly the most restrictive.
    assert limits.max_charge_w == min(lim[0] for lim in valid.values())
    assert limits.max_discharge_w == min(lim[1] for lim in valid.values())


# ---------------------------------------------------------------------------- the store


def test_store_wal_mode_and_full_sync(store: ProfileStore, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "profiles.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_put_created_then_unchanged_then_conflict(store: ProfileStore) -> None:
    assert store.put(_profile(), T0_MS) == "created"
    assert store.put(_profile(), T0_MS + 1) == "unchanged"
    assert store.put(_profile(max_charge_kw=1), T0_MS + 2) == "conflict"
    assert store.get("p-1") == _profile()  # the conflict changed nothing


def test_same_id_for_another_asset_is_a_conflict(store: ProfileStore) -> None:
    store.put(_profile(), T0_MS)
    assert store.put(_profile(asset="inv-002"), T0_MS) == "conflict"
    assert store.list("inv-002") == []


def test_store_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "profiles.sqlite3"
    with ProfileStore(path) as first:
        first.put(_profile(), T0_MS)
        first.put(_profile(profile_id="p-2", asset="inv-002"), T0_MS)
    with ProfileStore(path) as again:
        assert again.put(_profile(), T0_MS) == "unchanged"
        assert [p.profile_id for p in again.list()] == ["p-1", "p-2"]
        assert again.active("inv-001", T0_MS) is not None


def test_list_by_asset_in_validity_order(store: ProfileStore) -> None:
    store.put(_profile(profile_id="late", valid_from=iso(T0_MS + 60_000)), T0_MS)
    store.put(_profile(profile_id="early"), T0_MS)
    store.put(_profile(profile_id="other", asset="inv-002"), T0_MS)
    assert [p.profile_id for p in store.list("inv-001")] == ["early", "late"]
    assert len(store.list()) == 3


def test_delete_returns_the_profile_and_lifts_its_limits(store: ProfileStore) -> None:
    store.put(_profile(), T0_MS)
    assert store.active("inv-001", T0_MS) is not None
    deleted = store.delete("p-1")
    assert deleted is not None
    assert deleted.asset == "inv-001"
    assert store.active("inv-001", T0_MS) is None
    assert store.delete("p-1") is None
    assert store.put(_profile(max_charge_kw=1), T0_MS) == "created"  # the id is free again


def test_prune_drops_profiles_ended_before_the_retention(tmp_path: Path) -> None:
    path = tmp_path / "profiles.sqlite3"
    with ProfileStore(path) as store:
        store.put(_profile(), T0_MS)
        store.put(_profile(profile_id="p-2", valid_to=iso(T0_MS + 3 * H_MS)), T0_MS)
        assert store.prune(T0_MS + 2 * H_MS, retention_ms=H_MS // 2) == 1
        assert [p.profile_id for p in store.list()] == ["p-2"]
    with ProfileStore(path) as again:
        assert [p.profile_id for p in again.list()] == ["p-2"]


def test_store_active_and_next_change(store: ProfileStore) -> None:
    store.put(_profile(periods=[{"start": 600, "max_charge_kw": 1, "max_discharge_kw": 1}]), T0_MS)
    limits = store.active("inv-001", T0_MS + 600_000)
    assert limits is not None
    assert limits.max_charge_w == 1000.0
    assert store.next_change_ms("inv-001", T0_MS) == T0_MS + 600_000
    assert store.active("inv-002", T0_MS) is None
