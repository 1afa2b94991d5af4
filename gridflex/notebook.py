"""What the notebooks in ``notebooks/`` share: the history, the site file, the response law.

Each notebook reads ``GRIDFLEX_DATA_DIR`` (default: the demo's folder, ``gridflex-demo``)
through the views of :mod:`gridflex.history` and :mod:`gridflex.billing.views`, DuckDB into
polars frames. This module keeps the parts that are not analysis out of the notebooks:

* :func:`open_history` finds the folder, reads its ``site.toml`` (the demo writes one; else
  ``GRIDFLEX_SITE`` names it) and says in one sentence when there is nothing to analyse, so a
  notebook on an empty or missing folder prints that sentence instead of a traceback;
* :class:`ResponseLaw` is the site's frequency response (droop per asset or the fleet's
  FCR) as a function of frequency, from the same pure functions the pipeline dispatches
  with (:mod:`pipelines.dispatch`);
* :func:`save_results` writes a notebook's key figures as JSON when
  ``GRIDFLEX_NOTEBOOK_RESULTS`` names a folder: the tests execute the notebooks and read
  the figures back.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb

from gridflex.config import SiteConfig, load_site
from gridflex.history import connect
from pipelines.dispatch import DroopParams, droop_delta_w, fcr_request_w
from pipelines.site import droop_params

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "RESULTS_ENV",
    "SITE_ENV",
    "AssetRating",
    "History",
    "ResponseLaw",
    "data_dir_from_env",
    "open_history",
    "save_results",
]

log = logging.getLogger(__name__)

DATA_DIR_ENV: Final = "GRIDFLEX_DATA_DIR"
SITE_ENV: Final = "GRIDFLEX_SITE"
RESULTS_ENV: Final = "GRIDFLEX_NOTEBOOK_RESULTS"
#: Where ``make demo`` leaves its history (relative to the repository).
DEFAULT_DATA_DIR: Final = "gridflex-demo"


def data_dir_from_env() -> Path:
    """``GRIDFLEX_DATA_DIR``, else the demo's folder seen from the repository or ``notebooks/``."""
    value = os.environ.get(DATA_DIR_ENV)
    if value:
        return Path(value).expanduser()
    for candidate in (Path(DEFAULT_DATA_DIR), Path("..") / DEFAULT_DATA_DIR):
        if candidate.is_dir():
            return candidate
    return Path(DEFAULT_DATA_DIR)


@dataclass
class History:
    """An open history: the DuckDB connection with every view, and what is known about it.

    Attributes:
        con: Connection from :func:`gridflex.history.connect` (telemetry ... acks, and the
            billing views).
        data_dir: The folder read.
        site: The site file found beside the history (or named by ``GRIDFLEX_SITE``).
        readings: Telemetry readings in the history.
        problem: Why there is nothing to analyse (a missing or empty folder), else None.
        notes: What the reader should know (no site file: the laws' defaults are used).

    """

    con: duckdb.DuckDBPyConnection
    data_dir: Path
    site: SiteConfig | None
    readings: int
    problem: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when there is nothing to analyse (see :attr:`problem`)."""
        return self.problem is not None


def _site_file(data_dir: Path) -> Path | None:
    named = os.environ.get(SITE_ENV)
    if named:
        return Path(named).expanduser()
    beside = data_dir / "site.toml"
    return beside if beside.is_file() else None


def open_history(data_dir: str | Path | None = None) -> History:
    """Open the history in ``data_dir`` (default :func:`data_dir_from_env`).

    Never raises for a missing or empty folder or an unreadable site file: the returned
    :class:`History` says so in ``problem`` (nothing to analyse) or ``notes`` (no site
    file: the laws' defaults are used), and its views are empty.
    """
    root = Path(data_dir) if data_dir is not None else data_dir_from_env()
    notes: list[str] = []
    site: SiteConfig | None = None
    path = _site_file(root)
    if path is None:
        notes.append(f"no site file in {root}: [dispatch] and [billing] take their defaults")
    else:
        try:
            site = load_site(path)
        except (OSError, ValueError) as exc:  # ConfigError, TOMLDecodeError
            notes.append(
                f"site file {path} not used ({exc}): [dispatch] and [billing] take their defaults"
            )
    if site is not None:
        con = connect(
            root, interval_min=site.billing.interval_min, max_gap_s=site.billing.max_gap_s
        )
    else:
        con = connect(root)
    readings = int(con.execute("select count(*) from telemetry").fetchall()[0][0])
    problem = None
    if not root.is_dir():
        problem = (
            f"No history folder at {root.resolve()}: run `make demo` (or `gridflex demo "
            f"--duration 30`), or set {DATA_DIR_ENV} to a history folder."
        )
    elif readings == 0:
        problem = (
            f"The history in {root.resolve()} has no telemetry yet: run `make demo` (or "
            f"`gridflex pipeline`) to fill it, or set {DATA_DIR_ENV} to another folder."
        )
    if problem is not None:
        log.info("notebook history: %s", problem)
    return History(
        con=con, data_dir=root, site=site, readings=readings, problem=problem, notes=notes
    )


@dataclass(frozen=True, slots=True)
class AssetRating:
    """One asset as the response law sees it.

    Attributes:
        asset: Asset id.
        charge_w: Charge rating, W (the over-frequency droop scales with it).
        discharge_w: Discharge rating, W >= 0 (0: a charge-only car).
        droop: The asset's droop parameters (site defaults and its overrides).

    """

    asset: str
    charge_w: float
    discharge_w: float
    droop: DroopParams


@dataclass(frozen=True)
class ResponseLaw:
    """The site's frequency response as a function of frequency, W (+ charge, - discharge).

    ``droop``: the sum of every asset's IEEE 1547 droop on the given frequency (the
    pipeline applies each asset's on its own measurement; a notebook uses the window's
    mean). ``fcr``: ``capacity * r``, shared across the fleet. ``off``: 0. Neither caps the
    response by the assets' envelopes (SoC stop-points, a car's departure need): the law is
    what the site contracted to give, the measured power shows what it gave.
    """

    mode: str
    nominal_hz: float
    assets: tuple[AssetRating, ...] = ()
    fcr_capacity_w: float = 0.0
    fcr_deadband_hz: float = 0.010
    fcr_full_at_hz: float = 0.200

    @classmethod
    def from_site(
        cls, site: SiteConfig | None, v2x: Mapping[str, float] | None = None
    ) -> ResponseLaw:
        """The law of ``site`` (``[dispatch]``, ``[[assets]]``); droop defaults without one.

        Args:
            site: The site file, or None (droop with the standard's defaults, no asset).
            v2x: For charging stations whose car said it can discharge (ISO 15118-20
                V2X): the car's discharge limit, W (``inf`` when it stated none). A station
                missing here has a charge-only car (or none), as the pipeline treats a car
                that states no V2X. Inverters keep their site ratings.

        """
        if site is None:
            return cls(mode="droop", nominal_hz=50.0)
        cars = v2x or {}
        ratings = []
        for a in site.assets:
            discharge = a.max_discharge_w
            if a.kind == "evse":
                discharge = min(discharge, cars.get(a.id, 0.0))
            params = droop_params(site.dispatch.droop, a.droop)
            ratings.append(AssetRating(a.id, a.max_charge_w, discharge, params))
        fcr = site.dispatch.fcr
        return cls(
            mode=site.dispatch.mode,
            nominal_hz=float(site.nominal_frequency_hz),
            assets=tuple(ratings),
            fcr_capacity_w=fcr.capacity_w,
            fcr_deadband_hz=fcr.deadband_hz,
            fcr_full_at_hz=fcr.full_at_hz,
        )

    def only(self, assets: Iterable[str]) -> ResponseLaw:
        """The droop law of the named assets only (those that reported during an event)."""
        keep = set(assets)
        return ResponseLaw(
            self.mode,
            self.nominal_hz,
            tuple(a for a in self.assets if a.asset in keep),
            self.fcr_capacity_w,
            self.fcr_deadband_hz,
            self.fcr_full_at_hz,
        )

    def deadband_hz(self) -> tuple[float, float]:
        """Frequencies below and above which the law responds, Hz."""
        if self.mode == "fcr":
            return (self.nominal_hz - self.fcr_deadband_hz, self.nominal_hz + self.fcr_deadband_hz)
        params = [a.droop for a in self.assets] or [DroopParams()]
        return (
            self.nominal_hz - min(p.db_uf_hz for p in params),
            self.nominal_hz + min(p.db_of_hz for p in params),
        )

    def response_w(self, freq_hz: float) -> float:
        """The fleet's expected response at ``freq_hz``, W (+ charge, - discharge)."""
        if self.mode == "fcr":
            return fcr_request_w(
                freq_hz,
                self.nominal_hz,
                self.fcr_capacity_w,
                self.fcr_deadband_hz,
                self.fcr_full_at_hz,
            )
        if self.mode != "droop":
            return 0.0
        return 0.0 + sum(
            droop_delta_w(
                freq_hz,
                self.nominal_hz,
                a.droop,
                rated_charge_w=a.charge_w,
                rated_discharge_w=a.discharge_w,
            )
            for a in self.assets
        )


def save_results(name: str, results: Mapping[str, Any]) -> Path | None:
    """Write ``results`` to ``{GRIDFLEX_NOTEBOOK_RESULTS}/{name}.json`` when that is set.

    Returns:
        The file written, or None when the variable is not set (nothing is written).

    """
    folder = os.environ.get(RESULTS_ENV)
    if not folder:
        return None
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    log.info("notebook results written to %s", path)
    return path
