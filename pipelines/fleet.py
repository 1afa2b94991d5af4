"""The site's dispatcher: one decision per reading, a summary at least once a second.

:class:`SiteDispatcher` is the state of the dataflow step ``dispatch`` (keyed by site). It is
a plain object with a mapper ``(update) -> outputs``; no I/O, so it runs the same under
Bytewax, in a test or in a notebook, and pickles for Bytewax recovery.

Each :class:`AssetUpdate` (one reading, with the flexibility envelope the asset step
derived from it) is decided at once, so a response never waits for an analytics window:

* ``droop``: the asset's own ``freq_hz`` through :func:`~pipelines.dispatch.droop_delta_w`
  (IEEE 1547 acts on the DER's own measurement), added to its base, kept in its envelope.
  An asset that measures no frequency (most charging stations do not report one) uses the
  site frequency below, and its reason says ``site f``.
* ``fcr``: the site frequency — the median of the latest readings of the online assets no
  older than ``freq_max_age_ms`` (by event time, relative to the newest reading) — gives
  the fleet request; the asset's share is ``deliverable * headroom / total headroom``, the
  same proportional rule as :func:`~pipelines.dispatch.allocate`, from sums kept up to date
  on every reading (O(log n) per reading, not O(n)). Every asset reports every 200 ms, so
  the commands follow a frequency step within one reading period.

With ``local_droop`` (the devices droop on their own, programmed by ``control.droop``) the
``droop`` commands carry the base setpoint only, never the droop delta (the device adds it
itself; both would double the response). They still go out on every base move and as
keep-alives (the devices' 704 reversion timer stays fed), their reason names the local
droop and the response the device is expected to give, and the summary's requested /
allocated are that expected response: the law on the asset's own reading (else the site
frequency), and what the envelope leaves of it.

A command goes out when the setpoint moves by at least ``min_step_w`` from the last one
sent, or when the last one is ``refresh_s`` old (a keep-alive, by event time). Its id comes
from the reading and the decision (:func:`~pipelines.dispatch.command_id`).

The summary (retained, for a higher-level dispatcher) recomputes the exact allocation over
the online assets and re-syncs the running sums, so rounding never accumulates.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from gridflex.contract import DispatchCommand, SiteSummary, SiteTarget
from pipelines.dispatch import (
    DroopParams,
    Participant,
    allocate,
    clip,
    command_id,
    deliverable_w,
    droop_delta_w,
    fcr_request_w,
)

__all__ = ["AssetUpdate", "DispatchSettings", "SiteDispatcher", "WireUpdate"]

log = logging.getLogger(__name__)

Mode = Literal["off", "droop", "fcr"]


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """The ``[dispatch]`` table as the dispatcher needs it (powers W, times ms)."""

    site: str
    nominal_hz: float
    mode: Mode = "off"
    local_droop: bool = False
    fcr_capacity_w: float = 0.0
    fcr_deadband_hz: float = 0.010
    fcr_full_at_hz: float = 0.200
    min_step_w: float = 100.0
    refresh_ms: int = 5000
    valid_ms: int = 15_000
    freq_max_age_ms: int = 1000
    summary_interval_ms: int = 1000
    max_import_w: float | None = None
    max_export_w: float | None = None


@dataclass(frozen=True, slots=True)
class AssetUpdate:
    """One reading of one asset and the envelope derived from it (the asset step's output).

    Attributes:
        asset: Asset id.
        ts_ms: Time of the reading, UTC epoch ms.
        seq: Its ``seq``.
        boot: Its ``boot``.
        received_ms: When the pipeline received it.
        freq_hz: Frequency the asset measured, if any.
        power_w: Power now (+ charge).
        base_w: The asset's base setpoint (its schedule).
        min_w: Lowest setpoint allowed now (- discharge).
        max_w: Highest setpoint allowed now.
        rated_charge_w: Charge rating (droop scales the over-frequency response with it).
        rated_discharge_w: Discharge rating, positive (0: charge-only).
        droop: The asset's droop parameters.
        faulted: The device reports a fault: it takes no share.
        dispatchable: The asset is in the site file (it has ratings to dispatch).

    """

    asset: str
    ts_ms: int
    seq: int
    boot: str
    received_ms: int
    freq_hz: float | None
    power_w: float
    base_w: float
    min_w: float
    max_w: float
    rated_charge_w: float
    rated_discharge_w: float
    droop: DroopParams
    faulted: bool = False
    dispatchable: bool = True

    @property
    def participant(self) -> Participant:
        """The asset as the fleet allocation sees it."""
        return Participant(self.asset, self.base_w, self.min_w, self.max_w)

    def to_wire(self) -> WireUpdate:
        """A plain tuple of builtins, droop flattened: cheap to pickle between processes.

        The ``dispatch`` step is keyed by site, so in a cluster most updates reach it from
        another process (see :mod:`pipelines.reading`).
        """
        d = self.droop
        return (
            self.asset, self.ts_ms, self.seq, self.boot, self.received_ms, self.freq_hz,
            self.power_w, self.base_w, self.min_w, self.max_w, self.rated_charge_w,
            self.rated_discharge_w, (d.db_of_hz, d.db_uf_hz, d.k_of, d.k_uf, d.response_time_s),
            self.faulted, self.dispatchable,
        )  # fmt: skip

    @classmethod
    def from_wire(cls, wire: WireUpdate) -> AssetUpdate:
        """The update back from :meth:`to_wire`."""
        (asset, ts_ms, seq, boot, received_ms, freq_hz, power_w, base_w, min_w, max_w,
         rated_charge_w, rated_discharge_w, droop, faulted, dispatchable) = wire  # fmt: skip
        return cls(
            asset, ts_ms, seq, boot, received_ms, freq_hz, power_w, base_w, min_w, max_w,
            rated_charge_w, rated_discharge_w, DroopParams(*droop), faulted, dispatchable,
        )  # fmt: skip


#: An :class:`AssetUpdate` between processes (:meth:`AssetUpdate.to_wire`).
WireUpdate = tuple[Any, ...]


@dataclass
class _Slot:
    """What the dispatcher remembers of one asset."""

    update: AssetUpdate
    requested_w: float = 0.0
    expected_w: float = 0.0  # local droop: the response the device should give, W
    member: bool = False  # counted in the running sums and the frequency median
    freq_hz: float | None = None  # the value inserted in the sorted list


@dataclass
class SiteDispatcher:
    """State of the ``dispatch`` step of one site (see the module docstring)."""

    settings: DispatchSettings
    slots: dict[str, _Slot] = field(default_factory=dict)
    freqs: list[float] = field(default_factory=list)
    arrivals: deque[tuple[int, str]] = field(default_factory=deque)
    newest_ms: int = 0
    last_received_ms: int = 0
    newest_at_last_received_ms: int = 0
    base_sum_w: float = 0.0
    down_sum_w: float = 0.0
    up_sum_w: float = 0.0
    last_summary_ms: int = 0
    summary_seq: int = 0
    #: Per asset: the last setpoint sent and the time of the reading that sent it.
    sent: dict[str, tuple[float, int]] = field(default_factory=dict)
    #: The central's target in force: until when (wall ms; 0 = none), and the site file's
    #: own ``fcr_capacity_w`` to go back to when it expires.
    target_until_ms: int = 0
    own_fcr_capacity_w: float | None = None

    # ------------------------------------------------------------------ recovery

    def __getstate__(self) -> dict[str, object]:
        """What a recovery snapshot keeps: the last command per asset, the summary clock.

        The fleet's picture (latest readings, envelopes, median, sums) is left out: it is
        at most ``freq_max_age_ms`` old by definition and is rebuilt by the first readings
        after a restart. Bytewax copies and pickles this state every epoch, and with one
        key per site the whole fleet would be copied each time (~35 ms at 1,000 assets).
        """
        return {
            "settings": self.settings,
            "sent": dict(self.sent),
            "last_summary_ms": self.last_summary_ms,
            "summary_seq": self.summary_seq,
            "target_until_ms": self.target_until_ms,
            "own_fcr_capacity_w": self.own_fcr_capacity_w,
        }

    def __setstate__(self, state: dict[str, object]) -> None:
        """Restore a snapshot (see :meth:`__getstate__`)."""
        settings = state["settings"]
        assert isinstance(settings, DispatchSettings)
        SiteDispatcher.__init__(self, settings)
        self.sent = dict(state["sent"])  # type: ignore[call-overload]
        self.last_summary_ms = int(state["last_summary_ms"])  # type: ignore[call-overload]
        self.summary_seq = int(state["summary_seq"])  # type: ignore[call-overload]
        self.target_until_ms = int(state.get("target_until_ms", 0))  # type: ignore[call-overload]
        own = state.get("own_fcr_capacity_w")
        self.own_fcr_capacity_w = None if own is None else float(own)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ membership

    def _leave(self, slot: _Slot) -> None:
        if not slot.member:
            return
        slot.member = False
        if slot.freq_hz is not None:
            i = bisect.bisect_left(self.freqs, slot.freq_hz)
            del self.freqs[i]
            slot.freq_hz = None
        u = slot.update
        if u.dispatchable and not u.faulted:
            p = u.participant
            self.base_sum_w -= p.base_in_envelope_w
            self.down_sum_w -= p.headroom_down_w
            self.up_sum_w -= p.headroom_up_w

    def _join(self, slot: _Slot) -> None:
        slot.member = True
        u = slot.update
        if u.freq_hz is not None:
            bisect.insort(self.freqs, u.freq_hz)
            slot.freq_hz = u.freq_hz
        if u.dispatchable and not u.faulted:
            p = u.participant
            self.base_sum_w += p.base_in_envelope_w
            self.down_sum_w += p.headroom_down_w
            self.up_sum_w += p.headroom_up_w

    def _expire(self) -> None:
        oldest_ms = self.newest_ms - self.settings.freq_max_age_ms
        while self.arrivals and self.arrivals[0][0] < oldest_ms:
            ts_ms, asset = self.arrivals.popleft()
            slot = self.slots.get(asset)
            if slot is not None and slot.update.ts_ms == ts_ms:
                self._leave(slot)

    def site_freq_hz(self) -> float | None:
        """Median of the latest fresh readings of the online assets, or None."""
        n = len(self.freqs)
        if n == 0:
            return None
        mid = n // 2
        return self.freqs[mid] if n % 2 else (self.freqs[mid - 1] + self.freqs[mid]) / 2

    # ------------------------------------------------------------------ decisions

    def on_update(self, update: AssetUpdate) -> list[DispatchCommand | SiteSummary]:
        """Take one reading: update the fleet state, decide this asset, maybe summarise."""
        slot = self.slots.get(update.asset)
        if slot is None:
            slot = self.slots[update.asset] = _Slot(update)
        elif update.ts_ms < slot.update.ts_ms:
            return self._maybe_summary(update.received_ms)  # older than what we hold
        else:
            self._leave(slot)
            slot.update = update
        self.newest_ms = max(self.newest_ms, update.ts_ms)
        if update.received_ms >= self.last_received_ms:
            self.last_received_ms = update.received_ms
            self.newest_at_last_received_ms = self.newest_ms
        out: list[DispatchCommand | SiteSummary] = []
        if update.ts_ms >= self.newest_ms - self.settings.freq_max_age_ms:
            self._join(slot)
            self.arrivals.append((update.ts_ms, update.asset))
        self._expire()
        # Droop acts on the asset's own reading, whatever the others do; a fleet share needs
        # a fresh reading (Bytewax may hand over a backlog grouped by asset, so a reading
        # can be older than the newest one of another asset by more than the fresh age).
        decide = slot.member or self.settings.mode == "droop"
        command = self._decide(slot) if decide else None
        if command is not None:
            out.append(command)
        out.extend(self._maybe_summary(update.received_ms))
        return out

    def on_target(self, target: SiteTarget, now_ms: int) -> list[DispatchCommand | SiteSummary]:
        """Take the central's target: its FCR capacity replaces ``fcr_capacity_w``.

        An expired target (``valid_until_ms`` before ``now_ms``) or one for another site is
        ignored. The new capacity applies from the next reading on, until the target's
        ``valid_until_ms`` (wall clock): then, unless a newer target came, the site file's
        own capacity is back (:meth:`_expire_target`).
        """
        s = self.settings
        if target.site != s.site or target.valid_until_ms < now_ms:
            log.warning(
                "target %d for %s ignored (site %s, valid until %d, now %d)",
                target.seq,
                target.site,
                s.site,
                target.valid_until_ms,
                now_ms,
            )
            return []
        if self.own_fcr_capacity_w is None:
            self.own_fcr_capacity_w = s.fcr_capacity_w
        self.target_until_ms = target.valid_until_ms
        if target.fcr_capacity_w != s.fcr_capacity_w:
            log.info(
                "central target %d: FCR capacity %.0f W (was %.0f W)",
                target.seq,
                target.fcr_capacity_w,
                s.fcr_capacity_w,
            )
            self.settings = dataclasses.replace(s, fcr_capacity_w=target.fcr_capacity_w)
        return []

    def _expire_target(self, now_ms: int) -> None:
        """Past the target's ``valid_until_ms``: back to the site file's own capacity."""
        if not self.target_until_ms or now_ms <= self.target_until_ms:
            return
        own = self.own_fcr_capacity_w
        log.warning(
            "central target expired at %d (no newer one): FCR capacity back to %.0f W",
            self.target_until_ms,
            own or 0.0,
        )
        self.target_until_ms = 0
        if own is not None:
            self.settings = dataclasses.replace(self.settings, fcr_capacity_w=own)

    def on_tick(self, now_ms: int) -> list[DispatchCommand | SiteSummary]:
        """The source's heartbeat: publish the summary when due.

        When the whole site has been silent for longer than ``freq_max_age_ms``, event time
        is taken to advance with the wall clock from the newest reading, so the silent
        assets leave the online set and the median (event time alone would stand still).
        """
        idle_ms = now_ms - self.last_received_ms
        if self.last_received_ms and idle_ms > self.settings.freq_max_age_ms:
            self.newest_ms = max(self.newest_ms, self.newest_at_last_received_ms + idle_ms)
        return self._maybe_summary(now_ms)

    def _target(self, slot: _Slot) -> tuple[float, float, float, str, float | None] | None:
        """``(setpoint, requested, expected, reason, frequency used)`` for one asset.

        ``expected`` is the response the device gives by itself (local droop), else 0.
        """
        s = self.settings
        u = slot.update
        if not u.dispatchable or u.faulted:
            return None
        base = clip(u.base_w, u.min_w, u.max_w)
        # A departure need (min_w > 0) or a SoC limit can move the base itself.
        moved_base = (
            f"; base {u.base_w:+.0f} W held to the envelope {u.min_w:.0f}..{u.max_w:.0f} W"
            if abs(base - u.base_w) > 0.05
            else ""
        )
        if s.mode == "droop":
            own = u.freq_hz is not None
            freq = u.freq_hz if u.freq_hz is not None else self.site_freq_hz()
            if freq is None:
                if s.local_droop:  # the device needs no frequency from us
                    reason = f"base {base:+.0f} W, local droop on the device (no frequency)"
                    return base, 0.0, 0.0, reason + moved_base, None
                return None
            delta = droop_delta_w(
                freq,
                s.nominal_hz,
                u.droop,
                rated_charge_w=u.rated_charge_w,
                rated_discharge_w=u.rated_discharge_w,
            )
            if s.local_droop:
                expected = clip(base + delta, u.min_w, u.max_w) - base
                reason = (
                    f"base {base:+.0f} W, local droop on the device: expected {expected:+.0f} W"
                    f" at {'f' if own else 'site f'}={freq:.3f} Hz"
                )
                return base, delta, expected, reason + moved_base, freq
            setpoint = clip(base + delta, u.min_w, u.max_w)
            reason = f"droop {'f' if own else 'site f'}={freq:.3f} Hz: {delta:+.0f} W"
            if abs(setpoint - (base + delta)) > 0.05:
                reason += f", held to the envelope {u.min_w:.0f}..{u.max_w:.0f} W"
            return setpoint, delta, 0.0, reason + moved_base, freq
        freq = self.site_freq_hz()
        if freq is None:
            return None
        request = fcr_request_w(
            freq, s.nominal_hz, s.fcr_capacity_w, s.fcr_deadband_hz, s.fcr_full_at_hz
        )
        delivered = deliverable_w(
            request,
            self.base_sum_w,
            self.down_sum_w,
            self.up_sum_w,
            max_import_w=s.max_import_w,
            max_export_w=s.max_export_w,
        )
        p = u.participant
        room, total = (
            (p.headroom_down_w, self.down_sum_w)
            if delivered < 0
            else (p.headroom_up_w, self.up_sum_w)
        )
        share = delivered * room / total if total > 0 else 0.0
        setpoint = clip(base + share, u.min_w, u.max_w)
        reason = f"fcr site f={freq:.3f} Hz: fleet {request:+.0f} W, share {share:+.0f} W"
        if abs(delivered - request) > 0.5:
            reason += f", fleet short by {abs(request - delivered):.0f} W"
        return setpoint, share, 0.0, reason + moved_base, freq

    def _decide(self, slot: _Slot) -> DispatchCommand | None:
        s = self.settings
        if s.mode == "off":
            return None
        target = self._target(slot)
        if target is None:
            return None
        setpoint, requested, expected, reason, freq = target
        setpoint = round(setpoint, 1)
        slot.requested_w = requested
        slot.expected_w = expected
        u = slot.update
        last = self.sent.get(u.asset)
        refresh = last is not None and u.ts_ms - last[1] >= s.refresh_ms
        moved = last is None or abs(setpoint - last[0]) >= s.min_step_w
        if not moved and not refresh:
            return None
        if not moved:
            reason = f"keep-alive; {reason}"
        self.sent[u.asset] = (setpoint, u.ts_ms)
        return DispatchCommand(
            site=s.site,
            asset=u.asset,
            ts_ms=u.ts_ms,
            seq=u.seq,
            boot=u.boot,
            command_id=command_id(
                s.site, u.asset, boot=u.boot, seq=u.seq, mode=s.mode, setpoint_w=setpoint
            ),
            issued_ms=u.received_ms,
            setpoint_w=setpoint,
            base_setpoint_w=round(u.base_w, 1),
            valid_until_ms=u.received_ms + s.valid_ms,
            mode=s.mode,
            reason=reason[:256],
            freq_hz=None if freq is None else round(freq, 4),
        )

    # ------------------------------------------------------------------ summary

    def _maybe_summary(self, now_ms: int) -> list[DispatchCommand | SiteSummary]:
        self._expire_target(now_ms)  # now_ms is a receive time or the wall clock
        if now_ms - self.last_summary_ms < self.settings.summary_interval_ms:
            return []
        self.last_summary_ms = now_ms
        return [self.summary(now_ms)]

    def _resync(self, members: list[AssetUpdate]) -> None:
        participants = [u.participant for u in members if u.dispatchable and not u.faulted]
        self.base_sum_w = sum(p.base_in_envelope_w for p in participants)
        self.down_sum_w = sum(p.headroom_down_w for p in participants)
        self.up_sum_w = sum(p.headroom_up_w for p in participants)

    def summary(self, now_ms: int) -> SiteSummary:
        """The site aggregate: online assets, power, flexibility, requested/allocated response."""
        s = self.settings
        self._expire()
        members = [slot.update for slot in self.slots.values() if slot.member]
        self._resync(members)
        freq = self.site_freq_hz()
        participants = [u.participant for u in members if u.dispatchable and not u.faulted]
        requested = allocated = shortfall = 0.0
        if s.mode == "fcr" and freq is not None:
            result = allocate(
                fcr_request_w(
                    freq, s.nominal_hz, s.fcr_capacity_w, s.fcr_deadband_hz, s.fcr_full_at_hz
                ),
                participants,
                max_import_w=s.max_import_w,
                max_export_w=s.max_export_w,
            )
            requested, allocated, shortfall = (
                result.requested_w,
                result.allocated_w,
                result.shortfall_w,
            )
        elif s.mode == "droop":
            for slot in self.slots.values():
                u = slot.update
                last = self.sent.get(u.asset)
                if slot.member and u.dispatchable and not u.faulted and last is not None:
                    requested += slot.requested_w
                    if s.local_droop:
                        allocated += slot.expected_w
                    else:
                        allocated += last[0] - clip(u.base_w, u.min_w, u.max_w)
            shortfall = abs(requested - allocated)
        self.summary_seq += 1
        return SiteSummary(
            site=s.site,
            ts_ms=max(now_ms, 0),
            seq=self.summary_seq,
            mode=s.mode,
            assets_total=len(self.slots),
            assets_online=len(members),
            power_w=round(sum(u.power_w for u in members), 1),
            flex_charge_w=round(self.up_sum_w, 1),
            flex_discharge_w=round(self.down_sum_w, 1),
            freq_hz=None if freq is None else round(freq, 4),
            base_w=round(self.base_sum_w, 1),
            requested_w=round(requested, 1),
            allocated_w=round(allocated, 1),
            shortfall_w=round(shortfall, 1),
        )
