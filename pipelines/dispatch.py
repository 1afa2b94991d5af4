"""Dispatch control laws (pure functions, no I/O): droop, FCR request, fleet allocation, ids.

Sign convention, as everywhere in gridflex: a power or setpoint is + for charging/import
and - for discharging/export. Frequencies in Hz, powers in W.

* :func:`droop_delta_w` — IEEE 1547-2018 frequency-droop (clause 6.5.2.7): below
  ``nominal - db_uf`` the DER injects ``(f - (nominal - db_uf)) / (k_uf * nominal)`` of its
  rating (a negative, discharging ΔP for a store); above ``nominal + db_of`` it absorbs the
  mirror image with its charge rating. The defaults (db = 0.036 Hz, k = 0.05) are the
  standard's; 50 Hz nominal, f = 49.80 Hz, 10 kW rating gives ΔP = -656 W.
* :func:`fcr_request_w` — a frequency containment reserve (FCR, ENTSO-E SOGL art. 154):
  linear from the dead band (≤ 10 mHz) to full activation at ±200 mHz, discharge below
  nominal and charge above.
* :func:`allocate` — a fleet request shared across assets in proportion to each one's
  headroom in the requested direction, inside the site's transformer limits. Proportional
  sharing never asks an asset for more than its headroom, so the allocation sums to the
  request exactly whenever the fleet can deliver it, and the rest is the shortfall.
* :func:`command_id` — a deterministic id from the reading that caused a decision and the
  decision itself: the same inputs (after a restart, say) give the same id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_RESPONSE_TIME_S",
    "Allocation",
    "DroopParams",
    "Participant",
    "allocate",
    "clip",
    "command_id",
    "deliverable_w",
    "droop_delta_w",
    "fcr_request_w",
    "fcr_share",
]


def clip(value: float, low: float, high: float) -> float:
    """``value`` limited to ``[low, high]`` (``low`` wins if the range is empty)."""
    return max(low, min(high, value))


#: IEEE 1547-2018 default open-loop response time of the frequency droop, s (Table 24).
DEFAULT_RESPONSE_TIME_S = 5.0


@dataclass(frozen=True, slots=True)
class DroopParams:
    """IEEE 1547-2018 frequency droop (clause 6.5.2.7, Table 24), the one type for it.

    Attributes:
        db_of_hz: Over-frequency dead band, Hz.
        db_uf_hz: Under-frequency dead band, Hz.
        k_of: Over-frequency per-unit droop (0.05 = full rating at 5 % off nominal).
        k_uf: Under-frequency per-unit droop.
        response_time_s: Open-loop response time (90 % of a step), s. The static law
            (:func:`droop_delta_w`) does not use it; a device that droops on its own does
            (SunSpec 711 ``RspTms``, ``simulators.droop``).

    """

    db_of_hz: float = 0.036
    db_uf_hz: float = 0.036
    k_of: float = 0.05
    k_uf: float = 0.05
    response_time_s: float = DEFAULT_RESPONSE_TIME_S


def droop_delta_w(
    freq_hz: float,
    nominal_hz: float,
    params: DroopParams,
    *,
    rated_charge_w: float,
    rated_discharge_w: float,
) -> float:
    """Frequency-droop response ΔP in W (+ charge), clipped to the ratings.

    Args:
        freq_hz: Frequency the DER measures, Hz.
        nominal_hz: Nominal frequency, Hz (50 or 60).
        params: Dead bands and droops.
        rated_charge_w: Charge rating (the over-frequency response scales with it), W >= 0.
        rated_discharge_w: Discharge rating, as a positive number, W >= 0.

    Returns:
        ΔP: 0 inside the dead band; below it ``(f - (nominal - db_uf)) / (k_uf * nominal) *
        rated_discharge_w`` (negative); above it ``(f - (nominal + db_of)) / (k_of *
        nominal) * rated_charge_w`` (positive).

    """
    low_edge = nominal_hz - params.db_uf_hz
    if freq_hz < low_edge:
        delta = (freq_hz - low_edge) / (params.k_uf * nominal_hz) * rated_discharge_w
        return max(delta, -rated_discharge_w) + 0.0  # + 0.0: no "-0 W" for a charge-only asset
    high_edge = nominal_hz + params.db_of_hz
    if freq_hz > high_edge:
        delta = (freq_hz - high_edge) / (params.k_of * nominal_hz) * rated_charge_w
        return min(delta, rated_charge_w)
    return 0.0


def fcr_share(freq_hz: float, nominal_hz: float, deadband_hz: float, full_at_hz: float) -> float:
    """Signed activation of an FCR service in -1..1 (+ charge above nominal, - discharge below).

    ``r = clip((|f - nominal| - deadband) / (full_at - deadband), 0, 1)``.
    """
    deviation = freq_hz - nominal_hz
    r = clip((abs(deviation) - deadband_hz) / (full_at_hz - deadband_hz), 0.0, 1.0)
    return -r if deviation < 0 else r


def fcr_request_w(
    freq_hz: float, nominal_hz: float, capacity_w: float, deadband_hz: float, full_at_hz: float
) -> float:
    """The fleet's FCR response in W: ``capacity * r``, - below nominal, + above."""
    return capacity_w * fcr_share(freq_hz, nominal_hz, deadband_hz, full_at_hz)


@dataclass(frozen=True, slots=True)
class Participant:
    """One asset as the fleet allocation sees it.

    Attributes:
        asset: Asset id.
        base_w: The schedule the response adds to, W (+ charge).
        min_w: Lowest setpoint allowed now (its flexibility envelope): ``-max_discharge_w``
            for an asset that may discharge, else 0 or the charge its departure needs.
        max_w: Highest setpoint allowed now (charge ceiling, taper, derating).

    """

    asset: str
    base_w: float
    min_w: float
    max_w: float

    @property
    def base_in_envelope_w(self) -> float:
        """The base setpoint moved into the envelope (a departure need can raise it)."""
        return clip(self.base_w, self.min_w, self.max_w)

    @property
    def headroom_down_w(self) -> float:
        """How far the setpoint can move towards discharge from the base, W >= 0."""
        return max(0.0, self.base_in_envelope_w - self.min_w)

    @property
    def headroom_up_w(self) -> float:
        """How far the setpoint can move towards charge from the base, W >= 0."""
        return max(0.0, self.max_w - self.base_in_envelope_w)


@dataclass(frozen=True, slots=True)
class Allocation:
    """A fleet request shared across assets.

    Attributes:
        setpoints_w: Absolute setpoint per asset, W.
        requested_w: The response asked for, W (+ charge).
        allocated_w: The response allocated: the sum of ``setpoint - base``, W.
        shortfall_w: ``|requested - allocated|``: what the fleet cannot deliver, W.
        base_w: Sum of the (enveloped) bases, W.

    """

    setpoints_w: dict[str, float]
    requested_w: float
    allocated_w: float
    shortfall_w: float
    base_w: float


def deliverable_w(
    request_w: float,
    base_w: float,
    headroom_down_w: float,
    headroom_up_w: float,
    *,
    max_import_w: float | None = None,
    max_export_w: float | None = None,
) -> float:
    """The part of ``request_w`` the fleet can deliver (same sign, never more).

    Limited by the summed headroom in the requested direction and by the site's transformer:
    the site's total setpoint ``base_w + response`` stays within ``[-max_export_w,
    max_import_w]``.
    """
    if request_w < 0:
        room = headroom_down_w
        if max_export_w is not None:
            room = min(room, max(0.0, base_w + max_export_w))
        return max(request_w, -room)
    room = headroom_up_w
    if max_import_w is not None:
        room = min(room, max(0.0, max_import_w - base_w))
    return min(request_w, room)


def allocate(
    request_w: float,
    participants: Iterable[Participant],
    *,
    max_import_w: float | None = None,
    max_export_w: float | None = None,
) -> Allocation:
    """Share a fleet response across assets in proportion to their headroom.

    Faulted and offline assets are left out by the caller; a derated asset's envelope is
    already narrower, so it gets a smaller share. No asset leaves its envelope: a car's
    departure need and the SoC stop-points are in ``min_w``/``max_w``, and a charge-only
    car has ``min_w >= 0``.

    Returns:
        The setpoints; their deviations from the bases sum to ``request_w`` whenever the
        fleet's headroom and the transformer allow it, else to what they allow.

    """
    members = list(participants)
    bases = {p.asset: p.base_in_envelope_w for p in members}
    base_w = sum(bases.values())
    down = sum(p.headroom_down_w for p in members)
    up = sum(p.headroom_up_w for p in members)
    delivered = deliverable_w(
        request_w, base_w, down, up, max_import_w=max_import_w, max_export_w=max_export_w
    )
    total = down if delivered < 0 else up
    factor = delivered / total if total > 0 else 0.0
    setpoints: dict[str, float] = {}
    for p in members:
        room = p.headroom_down_w if delivered < 0 else p.headroom_up_w
        setpoints[p.asset] = bases[p.asset] + factor * room
    allocated = sum(setpoints.values()) - base_w
    return Allocation(
        setpoints_w=setpoints,
        requested_w=request_w,
        allocated_w=allocated,
        shortfall_w=abs(request_w - delivered),
        base_w=base_w,
    )


def command_id(site: str, asset: str, *, boot: str, seq: int, mode: str, setpoint_w: float) -> str:
    """Deterministic command id: the reading ``(asset, boot, seq)`` and the decision.

    ``setpoint_w`` enters rounded to 0.1 W (as published), so a replay of the same reading
    that decides the same setpoint gets the same id, and a different decision a new one.
    """
    text = f"{site}|{asset}|{boot}|{seq}|{mode}|{setpoint_w:.1f}"
    return f"{mode}-{hashlib.blake2b(text.encode(), digest_size=12).hexdigest()}"
