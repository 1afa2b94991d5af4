"""What the CSMS is configured with: stations, their EVSEs, sampling (pure).

``CsmsSettings.from_site`` groups the site file's ``kind = "evse"`` assets by their
``station_id``: each asset is one EVSE (``evse_id``) of a station. ``sampling_variables`` is
the SetVariables request the CSMS sends after every boot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gridflex.access import IpNetwork
from gridflex.config import ConfigError, EvseAsset, SiteConfig

__all__ = [
    "MEASURANDS",
    "CsmsSettings",
    "EvseConfig",
    "StationConfig",
    "aligned_interval_s",
    "sampling_variables",
]

#: Measurands the CSMS asks stations to sample (SampledDataCtrlr / AlignedDataCtrlr).
MEASURANDS = (
    "Energy.Active.Import.Register,Energy.Active.Export.Register,"
    "Power.Active.Import,Power.Active.Export,SoC,Current.Import,Current.Export,Voltage"
)


@dataclass(frozen=True)
class EvseConfig:
    """One EVSE of a station: the asset it publishes as and the caps of the setpoint rules."""

    asset_id: str
    evse_id: int
    max_charge_w: float
    max_discharge_w: float


@dataclass(frozen=True)
class StationConfig:
    """One charging station declared in the site file, with its EVSEs.

    ``max_w`` is the limit of its EVSEs together, sent as a ChargingStationMaxProfile after
    every boot; None sends none.
    """

    station_id: str
    password: str | None
    evses: tuple[EvseConfig, ...]
    max_w: float | None = None

    @classmethod
    def single(
        cls,
        station_id: str,
        asset_id: str,
        password: str | None,
        max_charge_w: float,
        max_discharge_w: float,
    ) -> StationConfig:
        """A station with one EVSE (evseId 1)."""
        evse = EvseConfig(asset_id, 1, max_charge_w, max_discharge_w)
        return cls(station_id, password, (evse,))

    def evse(self, evse_id: int) -> EvseConfig | None:
        """The EVSE with this OCPP evseId, if configured."""
        for evse in self.evses:
            if evse.evse_id == evse_id:
                return evse
        return None


def _agreed(values: list[Any], what: str, station: str, source: str) -> Any:
    given = {v for v in values if v is not None}
    if len(given) > 1:
        raise ConfigError(
            f"config error in {source}: the EVSE assets of station {station!r} give different "
            f"{what} values"
        )
    return next(iter(given), None)


@dataclass(frozen=True)
class CsmsSettings:
    """Everything the CSMS needs, taken from ``site.ocpp`` and the site's EVSE assets."""

    site_id: str
    stations: Mapping[str, StationConfig]
    host: str = "127.0.0.1"
    port: int = 9000
    meter_interval_s: float = 1.0
    response_timeout_s: float = 10.0
    heartbeat_interval_s: int = 300
    security_profile: Literal[1, 2, 3] = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    allow_from: tuple[IpNetwork, ...] = ()

    @classmethod
    def from_site(cls, site: SiteConfig) -> CsmsSettings:
        """Build the settings; ``ConfigError`` for an EVSE without a password.

        Also for EVSEs of one station whose ``password`` or ``station_max_w`` differ.
        """
        source = str(site.source or "<site>")
        by_station: dict[str, list[tuple[int, EvseAsset]]] = {}
        for index, asset in enumerate(site.assets):
            if not isinstance(asset, EvseAsset):
                continue
            if asset.password is None and site.ocpp.security_profile < 3:
                raise ConfigError(
                    f"config error in {source}: assets[{index}].password: security profile "
                    f"{site.ocpp.security_profile} needs an HTTP Basic password (16-40 "
                    f"characters) for station {asset.station!r}"
                )
            by_station.setdefault(asset.station, []).append((index, asset))
        stations: dict[str, StationConfig] = {}
        for station_id, entries in by_station.items():
            assets = [a for _i, a in entries]
            password = _agreed([a.password for a in assets], "password", station_id, source)
            max_w = _agreed([a.station_max_w for a in assets], "station_max_w", station_id, source)
            evses = tuple(
                EvseConfig(a.id, a.evse_id, a.max_charge_w, a.max_discharge_w)
                for a in sorted(assets, key=lambda a: a.evse_id)
            )
            stations[station_id] = StationConfig(station_id, password, evses, max_w)
        ocpp = site.ocpp
        return cls(
            site_id=site.id,
            stations=stations,
            host=ocpp.host,
            port=ocpp.port,
            meter_interval_s=ocpp.meter_interval_s,
            response_timeout_s=ocpp.response_timeout_s,
            heartbeat_interval_s=ocpp.heartbeat_interval_s,
            security_profile=ocpp.security_profile,
            tls_cert=ocpp.tls_cert,
            tls_key=ocpp.tls_key,
            tls_ca=ocpp.tls_ca,
            allow_from=ocpp.allow_from,
        )


def aligned_interval_s(meter_interval_s: float) -> int:
    """The clock-aligned interval asked of idle stations: whole seconds, at least 1."""
    return max(1, round(meter_interval_s))


def sampling_variables(meter_interval_s: float, *, whole_seconds: bool) -> list[dict[str, Any]]:
    """SetVariables entries for the meter-value interval (OCPP 2.x device model).

    ``SampledDataCtrlr.TxUpdatedInterval`` is an integer of seconds in the standard; a
    sub-second interval is first offered as a decimal (``"0.2"``), which gridflex's simulator
    and some stations accept, and, when refused, again rounded up to whole seconds
    (``whole_seconds=True``). Clock-aligned values (``AlignedDataCtrlr``) are asked for
    while idle only, so idle stations report too.
    """
    if whole_seconds or float(meter_interval_s).is_integer():
        interval = str(max(1, int(-(-meter_interval_s // 1))))
    else:
        interval = f"{meter_interval_s:g}"
    aligned = str(aligned_interval_s(meter_interval_s))

    def entry(component: str, variable: str, value: str) -> dict[str, Any]:
        return {
            "attributeValue": value,
            "component": {"name": component},
            "variable": {"name": variable},
        }

    return [
        entry("SampledDataCtrlr", "TxUpdatedInterval", interval),
        entry("SampledDataCtrlr", "TxUpdatedMeasurands", MEASURANDS),
        entry("AlignedDataCtrlr", "Interval", aligned),
        entry("AlignedDataCtrlr", "Measurands", MEASURANDS),
        entry("AlignedDataCtrlr", "SendDuringIdle", "true"),
    ]
