"""The CSMS's settings from a site file: EVSE assets grouped into stations."""

from __future__ import annotations

from typing import Any

import pytest

from collectors.ocpp.settings import CsmsSettings, EvseConfig
from gridflex.config import ConfigError, parse_site

PASSWORD = "station-password-0123"


def site(*assets: dict[str, Any]) -> dict[str, Any]:
    return {"site": {"id": "s1"}, "assets": list(assets)}


def evse(asset_id: str, station_id: str | None = None, **more: Any) -> dict[str, Any]:
    entry = {"id": asset_id, "kind": "evse", "max_charge_w": 11_000, "password": PASSWORD}
    if station_id is not None:
        entry["station_id"] = station_id
    return {**entry, **more}


def test_evse_assets_of_one_station_are_its_evses() -> None:
    settings = CsmsSettings.from_site(
        parse_site(
            site(
                evse("cs-7-2", "cs-7", evse_id=2, max_discharge_w=5_000, station_max_w=16_000),
                evse("cs-7-1", "cs-7", evse_id=1),
                evse("solo"),
            )
        )
    )
    assert sorted(settings.stations) == ["cs-7", "solo"]
    cs7 = settings.stations["cs-7"]
    assert cs7.evses == (
        EvseConfig("cs-7-1", 1, 11_000, 0),
        EvseConfig("cs-7-2", 2, 11_000, 5_000),
    )
    assert cs7.max_w == 16_000  # given on one EVSE: the station's
    assert settings.stations["solo"].evses == (EvseConfig("solo", 1, 11_000, 0),)
    assert settings.stations["solo"].max_w is None


def test_evses_of_one_station_that_disagree_are_a_config_error() -> None:
    raw = site(
        evse("a", "cs", evse_id=1, station_max_w=10_000),
        evse("b", "cs", evse_id=2, station_max_w=12_000),
    )
    with pytest.raises(ConfigError, match="station 'cs' give different station_max_w"):
        CsmsSettings.from_site(parse_site(raw))


def test_the_same_evse_twice_is_a_config_error() -> None:
    both = r"assets\[0\]\.evse_id and assets\[1\]\.evse_id: expected one asset per station"
    with pytest.raises(ConfigError, match=both):
        parse_site(site(evse("a", "cs"), evse("b", "cs")))
