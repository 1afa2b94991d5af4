"""The central dispatcher's allocation across sites (pure functions, no I/O).

A fleet-level FCR capacity (W, symmetric: full discharge below nominal, full charge above)
is shared across the sites whose summary is fresh, in proportion to each site's symmetric
flexibility: the smaller of the charge and discharge headroom its summary reports
(``flex_charge_w``, ``flex_discharge_w``), further limited by its energy over the
service's minimum duration when the site states an energy. Proportional sharing with a
factor ``min(1, capacity / total flexibility)`` never gives a site more than its
flexibility, and the shares sum to the capacity exactly whenever the fresh sites can hold
it; the rest is the shortfall. A stale site (summary older than ``max_age_ms``) gets
nothing: its share goes to the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["CentralAllocation", "SiteFlex", "allocate_fcr", "symmetric_flex_w"]


@dataclass(frozen=True, slots=True)
class SiteFlex:
    """One site as the central sees it, from its latest summary.

    Attributes:
        site: Site id.
        ts_ms: Time of the summary, UTC epoch ms.
        charge_w: Charge headroom from the base (``flex_charge_w``), W >= 0.
        discharge_w: Discharge headroom from the base (``flex_discharge_w``), W >= 0.
        energy_wh: Energy the site can give or take at full activation, if it states one.

    """

    site: str
    ts_ms: int
    charge_w: float
    discharge_w: float
    energy_wh: float | None = None


def symmetric_flex_w(site: SiteFlex, *, min_duration_s: float = 0.0) -> float:
    """What the site can hold of a symmetric service: ``min(charge, discharge)``, W >= 0.

    With an energy and a minimum duration, also at most ``energy / duration``.
    """
    flex = max(0.0, min(site.charge_w, site.discharge_w))
    if site.energy_wh is not None and min_duration_s > 0:
        flex = min(flex, max(0.0, site.energy_wh) * 3600.0 / min_duration_s)
    return flex


@dataclass(frozen=True, slots=True)
class CentralAllocation:
    """A fleet capacity shared across sites.

    Attributes:
        shares_w: Capacity per fresh site, W (every fresh site, 0 included).
        flex_w: The symmetric flexibility of each fresh site the shares are based on, W.
        requested_w: The fleet capacity asked for, W.
        allocated_w: The sum of the shares, W.
        shortfall_w: ``requested - allocated``: what the fresh sites cannot hold, W.
        stale: Sites left out because their summary is too old.

    """

    shares_w: dict[str, float]
    flex_w: dict[str, float]
    requested_w: float
    allocated_w: float
    shortfall_w: float
    stale: tuple[str, ...]


def allocate_fcr(
    capacity_w: float,
    sites: Iterable[SiteFlex],
    *,
    now_ms: int,
    max_age_ms: int,
    min_duration_s: float = 0.0,
) -> CentralAllocation:
    """Share ``capacity_w`` across the fresh sites in proportion to their flexibility.

    A site is fresh when ``now_ms - ts_ms <= max_age_ms``. Returns the shares; they sum to
    ``capacity_w`` when the fresh sites' flexibility covers it, else each site holds all
    its flexibility and the rest is the shortfall.
    """
    capacity = max(0.0, capacity_w)
    fresh: dict[str, float] = {}
    stale: list[str] = []
    for s in sites:
        if now_ms - s.ts_ms > max_age_ms:
            stale.append(s.site)
        else:
            fresh[s.site] = symmetric_flex_w(s, min_duration_s=min_duration_s)
    total = sum(fresh.values())
    factor = min(1.0, capacity / total) if total > 0 else 0.0
    shares = {site: flex * factor for site, flex in fresh.items()}
    allocated = min(capacity, sum(shares.values()))  # no rounding beyond the request
    return CentralAllocation(
        shares_w=shares,
        flex_w=fresh,
        requested_w=capacity,
        allocated_w=allocated,
        shortfall_w=max(0.0, capacity - allocated),
        stale=tuple(sorted(stale)),
    )
