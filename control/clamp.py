"""The safety clamp at the last hop: pure functions from a requested setpoint to a safe one.

Whatever the dataflow decided, the control writer passes every setpoint through
:func:`clamp` before it touches a device (DESIGN.md, invariant 2). Sign convention, as
everywhere in gridflex: + is charging/import, - is discharging/export; all powers in W.

Rules run in a fixed order and each one that changed the value is named in
:attr:`Clamped.rules`:

1. ``fault`` — a latched fault (ground fault "Error 0x04", "Grid_Sync_Error", a lost
   device) forces 0 W at once, past every other rule (no ramp: it is an emergency stop).
   The result is ``clamped``, not ``rejected``: the writer *does* write 0 W, and the ack
   must say what the device is now at (``applied_w=0.0``) with the fault as the reason.
   ``rejected`` is kept for "nothing was written".
2. ``rating`` / ``derating`` — the nameplate ratings times the thermal derating factor the
   device reports. ``rating`` when the request was beyond the nameplate, ``derating`` when
   the derated limit (derate < 1) was what bit; both when both.
3. ``profile`` — the active charging profile's limits (OCPP TxProfile, ``dischargeLimit``).
4. ``soc_floor`` / ``soc_ceiling`` / ``soc_unknown`` — the battery-health stop points: no
   discharge at or below ``soc_min_pct``, no charge at or above ``soc_max_pct``, and no
   discharge while the SoC is unknown.
5. ``ramp`` — ``|applied - previous| <= ramp_w_per_s * elapsed_s``. Rules 2-4 win over the
   ramp: when the previous setpoint lies outside them (the SoC reached a stop point, the
   device derated), the value goes to the nearest safe bound even if that is a bigger step.
6. ``site`` — the transformer. A setpoint beyond the import or export headroom the rest of
   the site leaves for this asset is refused: result ``rejected``, ``applied_w`` None,
   reason ``max capacity reached``; the writer leaves the device where it is.

``applied`` when no rule changed anything, ``clamped`` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MAX_CAPACITY_REACHED",
    "UNLIMITED_SITE",
    "ClampResult",
    "Clamped",
    "Limits",
    "SiteHeadroom",
    "clamp",
    "safe_window_w",
]

MAX_CAPACITY_REACHED = "max capacity reached"

ClampResult = Literal["applied", "clamped", "rejected"]


@dataclass(frozen=True, slots=True)
class Limits:
    """One asset's limits at this instant.

    ``max_charge_w`` and ``max_discharge_w`` are nameplate ratings, both positive.
    ``soc_min_pct`` / ``soc_max_pct`` are the stop points (0-100). ``ramp_w_per_s`` is the
    largest change per second (None = no ramp limit). ``derate`` is the thermal derating
    factor 0..1 the device reports. ``profile_max_charge_w`` / ``profile_max_discharge_w``
    are the active profile's limits, positive (None = no profile limit).
    """

    max_charge_w: float
    max_discharge_w: float
    soc_min_pct: float
    soc_max_pct: float
    ramp_w_per_s: float | None = None
    derate: float = 1.0
    profile_max_charge_w: float | None = None
    profile_max_discharge_w: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_charge_w", "max_discharge_w"):
            _require_non_negative(name, getattr(self, name))
        for name in ("ramp_w_per_s", "profile_max_charge_w", "profile_max_discharge_w"):
            value = getattr(self, name)
            if value is not None:
                _require_non_negative(name, value)
        if not 0.0 <= self.derate <= 1.0:
            raise ValueError(f"derate: expected 0..1, got {self.derate!r}")
        if not 0.0 <= self.soc_min_pct <= self.soc_max_pct <= 100.0:
            raise ValueError(
                "soc_min_pct/soc_max_pct: expected 0 <= min <= max <= 100, "
                f"got {self.soc_min_pct!r}/{self.soc_max_pct!r}"
            )


@dataclass(frozen=True, slots=True)
class SiteHeadroom:
    """What the rest of the site (the transformer) leaves for this asset, W, positive.

    None means unlimited in that direction.
    """

    import_w: float | None
    export_w: float | None

    def __post_init__(self) -> None:
        for name in ("import_w", "export_w"):
            value = getattr(self, name)
            if value is not None:
                _require_non_negative(name, value)


UNLIMITED_SITE = SiteHeadroom(import_w=None, export_w=None)


@dataclass(frozen=True, slots=True)
class Clamped:
    """What the clamp made of a request.

    ``applied_w`` is None only when ``result`` is ``rejected`` (nothing is written).
    ``rules`` names, in order, every rule that changed the value.
    """

    requested_w: float
    applied_w: float | None
    result: ClampResult
    rules: tuple[str, ...]
    reason: str | None


def _require_non_negative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")


def _clip(value_w: float, low_w: float, high_w: float) -> float:
    # "+ 0.0" turns a -0.0 into 0.0, so a clamped discharge reads as a plain zero.
    return min(max(value_w, low_w), high_w) + 0.0


def safe_window_w(limits: Limits, soc_pct: float | None) -> tuple[float, float]:
    """The interval ``(low_w, high_w)`` rules 2-4 allow, ``low_w <= 0 <= high_w``.

    Rating times derating, the profile, and the SoC stop points; the ramp and the site
    come on top of it in :func:`clamp`.
    """
    high_w = limits.max_charge_w * limits.derate
    low_w = -limits.max_discharge_w * limits.derate
    if limits.profile_max_charge_w is not None:
        high_w = min(high_w, limits.profile_max_charge_w)
    if limits.profile_max_discharge_w is not None:
        low_w = max(low_w, -limits.profile_max_discharge_w)
    if soc_pct is None or soc_pct <= limits.soc_min_pct:
        low_w = 0.0
    if soc_pct is not None and soc_pct >= limits.soc_max_pct:
        high_w = 0.0
    return low_w + 0.0, high_w + 0.0


def clamp(
    requested_w: float,
    *,
    limits: Limits,
    soc_pct: float | None,
    previous_w: float | None,
    elapsed_s: float | None,
    site: SiteHeadroom,
    faulted: str | None,
) -> Clamped:
    """Clamp ``requested_w`` (W, + charge, - discharge) to everything the asset allows.

    ``soc_pct`` is the battery's state of charge (None = unknown), ``previous_w`` the
    setpoint last applied to the device and ``elapsed_s`` the seconds since (either None =
    no ramp limit, e.g. the first command), ``site`` the transformer headroom and
    ``faulted`` the latched fault text (None = no fault). ``site`` and ``faulted`` have no
    defaults on purpose: the last hop must not forget them. See the module docstring for
    the rules and their order.
    """
    if faulted is not None:
        return Clamped(requested_w, 0.0, "clamped", ("fault",), faulted)
    if not math.isfinite(requested_w):
        return Clamped(requested_w, None, "rejected", ("invalid",), "setpoint is not finite")

    rules: list[str] = []
    value_w = requested_w

    # rating, then derating
    rated_w = _clip(value_w, -limits.max_discharge_w, limits.max_charge_w)
    if rated_w != value_w:
        rules.append("rating")
    derated_w = _clip(
        rated_w, -limits.max_discharge_w * limits.derate, limits.max_charge_w * limits.derate
    )
    if derated_w != rated_w:
        rules.append("derating")
    value_w = derated_w

    # profile
    if limits.profile_max_charge_w is not None or limits.profile_max_discharge_w is not None:
        high_w = math.inf if limits.profile_max_charge_w is None else limits.profile_max_charge_w
        low_w = (
            -math.inf if limits.profile_max_discharge_w is None else -limits.profile_max_discharge_w
        )
        profiled_w = _clip(value_w, low_w, high_w)
        if profiled_w != value_w:
            rules.append("profile")
        value_w = profiled_w

    # SoC stop points
    if value_w < 0.0:
        if soc_pct is None:
            rules.append("soc_unknown")
            value_w = 0.0
        elif soc_pct <= limits.soc_min_pct:
            rules.append("soc_floor")
            value_w = 0.0
    elif value_w > 0.0 and soc_pct is not None and soc_pct >= limits.soc_max_pct:
        rules.append("soc_ceiling")
        value_w = 0.0

    # ramp, never beyond the safe window above
    if limits.ramp_w_per_s is not None and previous_w is not None and elapsed_s is not None:
        step_w = limits.ramp_w_per_s * max(elapsed_s, 0.0)
        low_w, high_w = safe_window_w(limits, soc_pct)
        ramped_w = _clip(_clip(value_w, previous_w - step_w, previous_w + step_w), low_w, high_w)
        if ramped_w != value_w:
            rules.append("ramp")
        value_w = ramped_w

    # the site: refused, not clamped
    if (site.import_w is not None and value_w > site.import_w) or (
        site.export_w is not None and value_w < -site.export_w
    ):
        return Clamped(requested_w, None, "rejected", (*rules, "site"), MAX_CAPACITY_REACHED)

    if not rules:
        return Clamped(requested_w, value_w, "applied", (), None)
    return Clamped(requested_w, value_w, "clamped", tuple(rules), "clamped by " + ", ".join(rules))
