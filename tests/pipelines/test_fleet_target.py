"""The site dispatcher under the central's target: taken, expired, kept across recovery."""

from __future__ import annotations

import pickle

from gridflex.contract import SiteTarget
from pipelines.fleet import DispatchSettings, SiteDispatcher


def dispatcher() -> SiteDispatcher:
    return SiteDispatcher(
        DispatchSettings(site="s1", nominal_hz=50, mode="fcr", fcr_capacity_w=12_000)
    )


def target(capacity_w: float, valid_until_ms: int, site: str = "s1") -> SiteTarget:
    return SiteTarget(
        site=site,
        ts_ms=1_000,
        seq=1,
        fcr_capacity_w=capacity_w,
        fleet_fcr_capacity_w=3 * capacity_w,
        flex_w=20_000,
        valid_until_ms=valid_until_ms,
        reason="test",
    )


def test_a_target_holds_until_it_expires_then_the_site_file_capacity_is_back() -> None:
    d = dispatcher()
    d.on_target(target(6_000, valid_until_ms=31_000), now_ms=1_000)
    assert d.settings.fcr_capacity_w == 6_000
    d.on_tick(31_000)  # the last moment it is valid
    assert d.settings.fcr_capacity_w == 6_000
    d.on_tick(31_001)
    assert d.settings.fcr_capacity_w == 12_000


def test_a_newer_target_extends_the_validity() -> None:
    d = dispatcher()
    d.on_target(target(6_000, valid_until_ms=31_000), now_ms=1_000)
    d.on_target(target(5_000, valid_until_ms=61_000), now_ms=30_000)
    d.on_tick(40_000)
    assert d.settings.fcr_capacity_w == 5_000


def test_an_expired_or_foreign_target_is_ignored() -> None:
    d = dispatcher()
    d.on_target(target(6_000, valid_until_ms=999), now_ms=1_000)
    d.on_target(target(6_000, valid_until_ms=31_000, site="other"), now_ms=1_000)
    assert d.settings.fcr_capacity_w == 12_000


def test_recovery_keeps_the_target_and_its_expiry() -> None:
    d = dispatcher()
    d.on_target(target(6_000, valid_until_ms=31_000), now_ms=1_000)
    restored = pickle.loads(pickle.dumps(d))
    assert restored.settings.fcr_capacity_w == 6_000
    restored.on_tick(40_000)
    assert restored.settings.fcr_capacity_w == 12_000
