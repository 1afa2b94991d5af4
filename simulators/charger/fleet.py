"""The simulated fleet: which stations, which OCPP version, which car, which faults (pure).

``build_fleet(count, seed=..., v21_fraction=..., v2x_fraction=...)`` makes a seeded mix;
``fleet_from_site(path, ...)`` takes the station ids, passwords and power limits of a site
file's EVSEs. The same arguments always give the same stations and cars.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from simulators.ev import CarSpec, make_cars

__all__ = ["Faults", "OcppVersion", "StationSpec", "build_fleet", "fleet_from_site"]

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
class StationSpec:
    """One simulated charging station and the car that will use it."""

    station_id: str
    password: str | None
    ocpp_version: OcppVersion
    car: CarSpec
    max_charge_w: float = 22_000.0
    max_discharge_w: float = 11_000.0
    faults: Faults = Faults()
    seed: int = 0


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
) -> list[StationSpec]:
    """A seeded fleet: the same arguments always give the same stations and cars.

    ``ocpp="mix"`` makes ``round(count * v21_fraction)`` OCPP 2.1 stations, the rest 2.0.1;
    ``round(count * v2x_fraction)`` cars are V2X-capable. ``faults`` go to the first
    ``faulty`` stations (all when None). Station ids are ``{id_prefix}-{n:04d}`` from 1.
    """
    ids = [f"{id_prefix}-{n:04d}" for n in range(1, count + 1)]
    return _fleet(
        ids,
        [password] * count,
        [(max_charge_w, max_discharge_w)] * count,
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
    """A fleet for the EVSEs of a site file: their station ids, passwords and power limits."""
    from gridflex.config import load_site

    evses = load_site(site_path).evses[:count]
    return _fleet(
        [e.station for e in evses],
        [e.password for e in evses],
        [(e.max_charge_w, e.max_discharge_w) for e in evses],
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
    limits: list[tuple[float, float]],
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
        count,
        seed=seed + 1,
        v2x_fraction=v2x_fraction,
        arrival_window_s=arrival_window_s,
        stay_s=stay_s,
    )
    specs = []
    for index, (station_id, password, (charge_w, discharge_w), version, car) in enumerate(
        zip(ids, passwords, limits, versions, cars, strict=True)
    ):
        specs.append(
            StationSpec(
                station_id=station_id,
                password=password,
                ocpp_version=version,
                car=car,
                max_charge_w=charge_w,
                max_discharge_w=discharge_w,
                faults=faults if faulty is None or index < faulty else Faults(),
                seed=seed * 100_003 + index,
            )
        )
    return specs
