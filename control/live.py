"""What the control writer knows of each asset right now, and the limits that follow.

The writer subscribes to the site's telemetry (QoS 0: a lost reading is replaced by the next
one within 200 ms) and keeps the latest reading of every asset in :class:`LiveState`. From
it, at the moment a command is applied:

- the SoC for the stop points (:meth:`LiveState.soc_pct`), when the reading is fresh;
- the thermal derating from the connector temperature (``gridflex.derating``);
- the site's headroom (:meth:`LiveState.headroom`): the transformer's import and export
  limits minus what the *other* assets draw or give right now. The measured power of each
  asset counts (its latest fresh reading), not the setpoints: a device that lags its
  setpoint is what the transformer sees. Loads gridflex does not meter (the building) are
  not known and not subtracted; set the site's limits with that margin.

:func:`limits_for` puts ratings, SoC stop points, ramp, derating and the active charge
profile (REST API) together into the clamp's :class:`~control.clamp.Limits`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from control.clamp import Limits, SiteHeadroom
from gridflex import jsonio
from gridflex.config import EvseAsset, InverterAsset
from gridflex.derating import derate_factor

__all__ = [
    "LiveReading",
    "LiveState",
    "ProfileLimits",
    "limits_for",
    "parse_reading",
]


@dataclass(frozen=True, slots=True)
class LiveReading:
    """The fields of one ``telemetry/1`` reading the writer uses."""

    asset: str
    ts_ms: int
    power_w: float
    soc_pct: float | None
    temp_c: float | None
    status: str | None
    device_status: str | None

    def as_dict(self) -> dict[str, Any]:
        """The reading for the REST API."""
        return {
            "ts_ms": self.ts_ms,
            "power_w": self.power_w,
            "soc_pct": self.soc_pct,
            "temp_c": self.temp_c,
            "status": self.status,
            "device_status": self.device_status,
        }


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_reading(payload: bytes) -> LiveReading | None:
    """The writer's view of a ``telemetry/1`` payload; None when it is not one.

    Lenient on purpose and cheap (~5 us): the pipeline validates and dead-letters telemetry;
    the writer only needs a few numbers (what it cannot read, :class:`LiveState` drops and
    reports). A SoC outside 0..100 counts as unknown.
    """
    try:
        data = jsonio.loads(payload)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("schema") != "telemetry/1":
        return None
    asset, ts_ms, power_w = data.get("asset"), data.get("ts_ms"), _number(data.get("power_w"))
    if not isinstance(asset, str) or not isinstance(ts_ms, int) or power_w is None:
        return None
    soc_pct = _number(data.get("soc_pct"))
    if soc_pct is not None and not 0.0 <= soc_pct <= 100.0:
        soc_pct = None
    return LiveReading(
        asset=asset,
        ts_ms=ts_ms,
        power_w=power_w,
        soc_pct=soc_pct,
        temp_c=_number(data.get("temp_c")),
        status=_text(data.get("status")),
        device_status=_text(data.get("device_status")),
    )


class LiveState:
    """The latest reading of each asset; readings older than ``max_age_ms`` do not count.

    Ages are measured against the writer's clock (epoch ms) and the reading's ``ts_ms``.
    The collectors publish 5,000 readings a second at 1,000 inverters and the writer needs
    one now and then, so :meth:`offer` keeps the payload as it came and :meth:`reading`
    parses it when asked (once per payload). The last payload to arrive for an asset is its
    latest: one collector publishes an asset's readings, in order (MQTT keeps the order of
    one publisher's messages). A payload that turns out unreadable when asked (or names
    another asset than the one it was held for) is dropped and handed to
    ``on_unreadable(asset, payload)``: the service dead-letters it (``control.inbound``).
    """

    def __init__(
        self, max_age_ms: int, on_unreadable: Callable[[str, bytes], None] | None = None
    ) -> None:
        self.max_age_ms = max_age_ms
        self.on_unreadable = on_unreadable
        self._latest: dict[str, bytes | LiveReading] = {}
        self._total_at_ms: int | None = None
        self._total_w = 0.0

    def offer(self, asset: str, payload: bytes) -> None:
        """Hold ``payload`` (a ``telemetry/1`` of ``asset``) as the asset's latest reading."""
        self._latest[asset] = payload

    def update(self, reading: LiveReading) -> None:
        """Hold an already parsed reading as the asset's latest."""
        self._latest[reading.asset] = reading

    def reading(self, asset: str) -> LiveReading | None:
        """The asset's latest reading, whatever its age; None when none or unreadable."""
        held = self._latest.get(asset)
        if isinstance(held, bytes):
            parsed = parse_reading(held)
            if parsed is None or parsed.asset != asset:
                del self._latest[asset]
                if self.on_unreadable is not None:
                    self.on_unreadable(asset, held)
                return None
            self._latest[asset] = held = parsed
        return held

    def fresh(self, asset: str, now_ms: int) -> LiveReading | None:
        """The asset's latest reading if it is no older than ``max_age_ms``."""
        reading = self.reading(asset)
        if reading is None or now_ms - reading.ts_ms > self.max_age_ms:
            return None
        return reading

    def soc_pct(self, asset: str, now_ms: int) -> float | None:
        """The SoC of the latest fresh reading, None when unknown."""
        reading = self.fresh(asset, now_ms)
        return None if reading is None else reading.soc_pct

    def derate(self, asset: str, now_ms: int) -> float:
        """The thermal derating factor from the latest fresh connector temperature."""
        reading = self.fresh(asset, now_ms)
        return derate_factor(None if reading is None else reading.temp_c)

    def site_power_w(self, now_ms: int) -> float:
        """The sum of the fresh readings' power, W (+ import); recomputed at most every 50 ms.

        At 1,000 assets a frequency step brings 1,000 commands within a poll: one sum per
        50 ms instead of one per command.
        """
        if self._total_at_ms is None or not 0 <= now_ms - self._total_at_ms < 50:
            horizon = now_ms - self.max_age_ms
            readings = [self.reading(asset) for asset in list(self._latest)]
            self._total_w = sum(r.power_w for r in readings if r is not None and r.ts_ms >= horizon)
            self._total_at_ms = now_ms
        return self._total_w

    def headroom(
        self, asset: str, import_w: float | None, export_w: float | None, now_ms: int
    ) -> SiteHeadroom:
        """The transformer's headroom left for ``asset`` by the other assets (module doc)."""
        if import_w is None and export_w is None:
            return SiteHeadroom(None, None)
        own = self.fresh(asset, now_ms)
        others_w = self.site_power_w(now_ms) - (0.0 if own is None else own.power_w)
        return SiteHeadroom(
            import_w=None if import_w is None else max(import_w - others_w, 0.0),
            export_w=None if export_w is None else max(export_w + others_w, 0.0),
        )


class ProfileLimits(Protocol):
    """The limits of the charge profiles in force for an asset (REST API)."""

    @property
    def max_charge_w(self) -> float | None:
        """Largest charging power, W (None: no limit)."""

    @property
    def max_discharge_w(self) -> float | None:
        """Largest discharging power, W, positive (None: no limit)."""

    @property
    def soc_min_pct(self) -> float | None:
        """No discharge at or below this SoC, % (None: the site file's)."""

    @property
    def soc_max_pct(self) -> float | None:
        """No charge at or above this SoC, % (None: the site file's)."""


def limits_for(
    asset: InverterAsset | EvseAsset, *, derate: float, profile: ProfileLimits | None
) -> Limits:
    """The clamp's limits for ``asset`` now.

    The site file's ratings, stop points and ramp, the derating and the active profile (a
    profile only tightens: its stop points narrow the site file's).
    """
    soc_min, soc_max = asset.soc_min_pct, asset.soc_max_pct
    charge_w = discharge_w = None
    if profile is not None:
        charge_w, discharge_w = profile.max_charge_w, profile.max_discharge_w
        if profile.soc_min_pct is not None:
            soc_min = max(soc_min, profile.soc_min_pct)
        if profile.soc_max_pct is not None:
            soc_max = min(soc_max, profile.soc_max_pct)
        soc_max = max(soc_max, soc_min)
    return Limits(
        max_charge_w=asset.max_charge_w,
        max_discharge_w=asset.max_discharge_w,
        soc_min_pct=soc_min,
        soc_max_pct=soc_max,
        ramp_w_per_s=asset.ramp_w_per_s,
        derate=derate,
        profile_max_charge_w=charge_w,
        profile_max_discharge_w=discharge_w,
    )
