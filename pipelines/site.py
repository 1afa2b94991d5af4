"""What the dataflow needs from a site file, and the settings its steps derive from it.

:class:`SiteLike` is the part of ``gridflex.config.SiteConfig`` the dataflow reads (a
protocol, so tests and notebooks can pass anything shaped like it);
:func:`dispatch_settings`, :func:`asset_profiles`, :func:`droop_params` and
:func:`car_defaults` turn the ``[dispatch]`` table and ``[[assets]]`` into the plain values
of :mod:`pipelines.fleet` and :mod:`pipelines.assets` (``control.droop`` programs the same
:func:`droop_params` into the devices with ``local_droop``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pipelines.assets import AssetProfile, CarDefaults
from pipelines.dispatch import DroopParams
from pipelines.fleet import DispatchSettings

__all__ = ["SiteLike", "asset_profiles", "car_defaults", "dispatch_settings", "droop_params"]


class _MqttSettings(Protocol):
    @property
    def url(self) -> str: ...
    @property
    def queue_limit(self) -> int: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...


class _HistorySettings(Protocol):
    @property
    def dir(self) -> Any: ...


class _PipelineSettings(Protocol):
    @property
    def window_ms(self) -> int: ...
    @property
    def allowed_lateness_ms(self) -> int: ...
    @property
    def recovery(self) -> bool: ...
    @property
    def recovery_dir(self) -> Path | None: ...
    @property
    def snapshot_interval_s(self) -> float: ...
    @property
    def durable_ack(self) -> bool: ...
    @property
    def wal_dir(self) -> Path | None: ...
    @property
    def receive_queue(self) -> int: ...


class SiteLike(Protocol):
    """What the dataflow needs from ``gridflex.config.SiteConfig``.

    ``dispatch`` and ``assets`` are read by :func:`dispatch_settings` and
    :func:`asset_profiles` (the ``[dispatch]`` table and ``[[assets]]``).
    """

    @property
    def max_import_w(self) -> float | None: ...  # noqa: D102
    @property
    def max_export_w(self) -> float | None: ...  # noqa: D102
    @property
    def dispatch(self) -> Any: ...  # noqa: D102
    @property
    def assets(self) -> Any: ...  # noqa: D102

    @property
    def id(self) -> str: ...  # noqa: D102
    @property
    def nominal_frequency_hz(self) -> float: ...  # noqa: D102
    @property
    def mqtt(self) -> _MqttSettings: ...  # noqa: D102
    @property
    def history(self) -> _HistorySettings: ...  # noqa: D102
    @property
    def pipeline(self) -> _PipelineSettings: ...  # noqa: D102


def dispatch_settings(site: SiteLike) -> DispatchSettings:
    """The dispatcher's settings from the site's ``[dispatch]`` table and transformer limits."""
    d = site.dispatch
    return DispatchSettings(
        site=site.id,
        nominal_hz=float(site.nominal_frequency_hz),
        mode=d.mode,
        local_droop=d.local_droop,
        fcr_capacity_w=d.fcr.capacity_w,
        fcr_deadband_hz=d.fcr.deadband_hz,
        fcr_full_at_hz=d.fcr.full_at_hz,
        min_step_w=d.min_step_w,
        refresh_ms=round(d.refresh_s * 1000),
        valid_ms=round(d.valid_s * 1000),
        freq_max_age_ms=d.freq_max_age_ms,
        summary_interval_ms=round(d.summary_interval_s * 1000),
        max_import_w=site.max_import_w,
        max_export_w=site.max_export_w,
    )


def droop_params(site_droop: Any, override: Any | None) -> DroopParams:
    """One asset's droop: ``[dispatch.droop]`` with the keys its ``droop`` table overrides.

    ``site_droop`` is shaped like ``gridflex.config.DroopConfig`` and ``override`` like
    ``DroopOverride`` (a key left out, or None, keeps the site's value).
    """
    values = {
        name: getattr(site_droop, name)
        if override is None or getattr(override, name) is None
        else getattr(override, name)
        for name in DroopParams.__dataclass_fields__
    }
    return DroopParams(**values)


def asset_profiles(site: SiteLike) -> dict[str, AssetProfile]:
    """Each asset of the site file with its droop parameters (site defaults + overrides)."""
    profiles = {}
    for a in site.assets:
        params = droop_params(site.dispatch.droop, a.droop)
        profiles[a.id] = AssetProfile(
            asset=a.id,
            kind=a.kind,
            max_charge_w=a.max_charge_w,
            max_discharge_w=a.max_discharge_w,
            capacity_wh=a.capacity_wh,
            soc_min_pct=a.soc_min_pct,
            soc_max_pct=a.soc_max_pct,
            base_w=a.base_setpoint_w,
            droop=params,
        )
    return profiles


def car_defaults(site: SiteLike) -> CarDefaults:
    """``[dispatch.ev_defaults]`` as the asset step needs it."""
    ev = site.dispatch.ev_defaults
    return CarDefaults(
        capacity_wh=ev.capacity_wh,
        target_soc_pct=ev.target_soc_pct,
        dwell_ms=round(ev.dwell_h * 3_600_000),
        efficiency=ev.efficiency,
        taper_soc_pct=ev.taper_soc_pct,
    )
