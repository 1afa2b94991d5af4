"""The simulated fleet: which stations, their EVSEs, OCPP versions, cars, faults (pure).

``build_fleet(count, seed=..., v21_fraction=..., v2x_fraction=..., evses_per_station=N)``
makes a seeded mix; ``fleet_from_site(path, ...)`` takes the station ids, EVSE ids,
passwords and power limits of a site file's EVSE assets (each asset one EVSE, grouped by
``station_id``). ``site_assets(specs)`` is the other way round: the ``[[assets]]`` entries
of a site file for a fleet. The same arguments always give the same stations and cars.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from simulators.ev import CarSpec, make_cars

__all__ = [
    "EvseSpec",
    "Faults",
    "OcppVersion",
    "StationSpec",
    "build_fleet",
    "evse_asset_id",
    "fleet_from_site",
    "site_assets",
]

OcppVersion = Literal["2.0.1", "2.1"]


@dataclass(frozen=True)
class Faults:
    """Fault injection for one station (all off by default)."""

    overtemp: bool = False
    ground_fault_after_s: float | None = None
    drop_rate: float = 0.0
    hang_after_s: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop_rate <= 1.0:
            raise ValueError("drop_rate must be in [0, 1]")


@dataclass(frozen=True)
class EvseSpec:
    """One EVSE of a simulated station (OCPP ``evseId``) and the car that will use it."""

    car: CarSpec
    evse_id: int = 1
    max_charge_w: float = 22_000.0
    max_discharge_w: float = 11_000.0


@dataclass(frozen=True)
class StationSpec:
    """One simulated charging station with its EVSEs (each with its own car and physics).

    Faults concern the whole station (every EVSE).
    """

    station_id: str
    password: str | None
    ocpp_version: OcppVersion
    evses: tuple[EvseSpec, ...]
    faults: Faults = Faults()
    seed: int = 0

    def __post_init__(self) -> None:
        ids = [e.evse_id for e in self.evses]
        if not ids or len(set(ids)) != len(ids) or min(ids) < 1:
            raise ValueError("a station needs EVSEs with distinct evse_id >= 1")

    @classmethod
    def single(
        cls,
        station_id: str,
        password: str | None,
        ocpp_version: OcppVersion,
        car: CarSpec,
        *,
        max_charge_w: float = 22_000.0,
        max_discharge_w: float = 11_000.0,
        faults: Faults = Faults(),
        seed: int = 0,
    ) -> StationSpec:
        """A station with one EVSE (evseId 1)."""
        evse = EvseSpec(car, 1, max_charge_w, max_discharge_w)
        return cls(station_id, password, ocpp_version, (evse,), faults, seed)


def evse_asset_id(station_id: str, evse_id: int, evses_in_station: int) -> str:
    """The asset id of an EVSE: the station id, with ``-{evse_id}`` when it has several."""
    return station_id if evses_in_station == 1 else f"{station_id}-{evse_id}"


def site_assets(specs: list[StationSpec]) -> list[dict[str, object]]:
    """The ``[[assets]]`` entries (``kind = "evse"``) of a site file for ``specs``.

    One per EVSE: ``id`` (``evse_asset_id``), ``station_id``, ``evse_id``, ``password``
    (when set), ``max_charge_w``, ``max_discharge_w``. ``fleet_from_site`` reads them back.
    """
    assets: list[dict[str, object]] = []
    for spec in specs:
        for evse in spec.evses:
            asset: dict[str, object] = {
                "id": evse_asset_id(spec.station_id, evse.evse_id, len(spec.evses)),
                "kind": "evse",
                "station_id": spec.station_id,
                "evse_id": evse.evse_id,
                "max_charge_w": evse.max_charge_w,
                "max_discharge_w": evse.max_discharge_w,
            }
            if spec.password is not None:
                asset["password"] = spec.password
            assets.append(asset)
    return assets


def _versions(count: int, ocpp: str, v21_fraction: float, rng: random.Random) -> list[OcppVersion]:
    if ocpp in ("2.0.1", "2.1"):
        only: OcppVersion = "2.1" if ocpp == "2.1" else "2.0.1"
        return [only] * count
    if not 0.0 <= v21_fraction <= 1.0:
        raise ValueError("v21_fraction must be in [0, 1]")
    n21 = round(count * v21_fraction)
    v21: OcppVersion = "2.1"
    v201: OcppVersion = "2.0.1"
    versions = [v21] * n21 + [v201] * (count - n21)
    rng.shuffle(versions)
    return versions


def build_fleet(
    count: int,
    *,
    seed: int = 1,
    ocpp: Literal["2.0.1", "2.1", "mix"] = "mix",
    v21_fraction: float = 0.5,
    v2x_fraction: float = 0.5,
    id_prefix: str = "sim-cs",
    password: str | None = None,
    arrival_window_s: float = 0.0,
    stay_s: float | None = None,
    faults: Faults = Faults(),
    faulty: int | None = None,
    max_charge_w: float = 22_000.0,
    max_discharge_w: float = 11_000.0,
    evses_per_station: int = 1,
) -> list[StationSpec]:
    """A seeded fleet: the same arguments always give the same stations and cars.

    ``ocpp="mix"`` makes ``round(count * v21_fraction)`` OCPP 2.1 stations, the rest 2.0.1;
    ``round(cars * v2x_fraction)`` cars are V2X-capable. ``faults`` go to the first
    ``faulty`` stations (all when None). Station ids are ``{id_prefix}-{n:04d}`` from 1;
    each has ``evses_per_station`` EVSEs (evseId 1..N), each with its own car.
    """
    if evses_per_station < 1:
        raise ValueError("evses_per_station must be >= 1")
    ids = [f"{id_prefix}-{n:04d}" for n in range(1, count + 1)]
    limits = (max_charge_w, max_discharge_w)
    return _fleet(
        ids,
        [password] * count,
        [[(e, *limits) for e in range(1, evses_per_station + 1)]] * count,
        seed=seed,
        ocpp=ocpp,
        v21_fraction=v21_fraction,
        v2x_fraction=v2x_fraction,
        arrival_window_s=arrival_window_s,
        stay_s=stay_s,
        faults=faults,
        faulty=faulty,
    )


def fleet_from_site(
    site_path: Path,
    *,
    count: int | None = None,
    seed: int = 1,
    ocpp: Literal["2.0.1", "2.1", "mix"] = "mix",
    v21_fraction: float = 0.5,
    v2x_fraction: float = 0.5,
    arrival_window_s: float = 0.0,
    stay_s: float | None = None,
    faults: Faults = Faults(),
    faulty: int | None = None,
) -> list[StationSpec]:
    """A fleet for the EVSE assets of a site file, grouped into stations by ``station_id``.

    Station ids, EVSE ids, passwords and power limits come from the file; ``count`` takes
    the first stations only.
    """
    from gridflex.config import load_site

    stations: dict[str, list[tuple[int, float, float]]] = {}
    passwords: dict[str, str | None] = {}
    for asset in load_site(site_path).evses:
        stations.setdefault(asset.station, []).append(
            (asset.evse_id, asset.max_charge_w, asset.max_discharge_w)
        )
        passwords.setdefault(asset.station, asset.password)
    ids = list(stations)[:count]
    return _fleet(
        ids,
        [passwords[i] for i in ids],
        [sorted(stations[i]) for i in ids],
        seed=seed,
        ocpp=ocpp,
        v21_fraction=v21_fraction,
        v2x_fraction=v2x_fraction,
        arrival_window_s=arrival_window_s,
        stay_s=stay_s,
        faults=faults,
        faulty=faulty,
    )


def _fleet(
    ids: list[str],
    passwords: list[str | None],
    evses: list[list[tuple[int, float, float]]],
    *,
    seed: int,
    ocpp: str,
    v21_fraction: float,
    v2x_fraction: float,
    arrival_window_s: float,
    stay_s: float | None,
    faults: Faults,
    faulty: int | None,
) -> list[StationSpec]:
    count = len(ids)
    rng = random.Random(seed)
    versions = _versions(count, ocpp, v21_fraction, rng)
    cars = make_cars(
        sum(len(e) for e in evses),
        seed=seed + 1,
        v2x_fraction=v2x_fraction,
        arrival_window_s=arrival_window_s,
        stay_s=stay_s,
    )
    specs = []
    car_iter = iter(cars)
    for index, (station_id, password, station_evses, version) in enumerate(
        zip(ids, passwords, evses, versions, strict=True)
    ):
        specs.append(
            StationSpec(
                station_id=station_id,
                password=password,
                ocpp_version=version,
                evses=tuple(
                    EvseSpec(next(car_iter), evse_id, charge_w, discharge_w)
                    for evse_id, charge_w, discharge_w in station_evses
                ),
                faults=faults if faulty is None or index < faulty else Faults(),
                seed=seed * 100_003 + index,
            )
        )
    return specs
