"""What the app's pages show, as polars frames from the history's DuckDB views.

Every function takes a connection from :func:`open_history` (the views of
:func:`gridflex.history.connect`, billing ones included) and returns a frame whose columns
the pages and the tests rely on. Nothing here imports Streamlit, so it is tested like any
module. Times are epoch milliseconds (``*_ms``) plus UTC timestamps for the charts.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import duckdb
import polars as pl

from gridflex.config import ConfigError, load_site
from gridflex.history import PART_GLOB, STREAMS, TELEMETRY, connect

__all__ = [
    "Deadband",
    "acks_by_result",
    "asset_forecast",
    "asset_history",
    "assets",
    "clamp_rules",
    "deadband",
    "dispatch_timeline",
    "fleet",
    "fleet_response",
    "fmt",
    "frequency",
    "has_view",
    "history_problem",
    "latencies",
    "newest_ms",
    "open_history",
    "register_energy",
    "sessions",
    "settlement_totals",
    "settlements",
    "since",
]

log = logging.getLogger(__name__)

#: The file ``gridflex demo`` writes beside its history; its dispatch settings are read.
SITE_FILE: Final = "site.toml"


def history_problem(data_dir: Path) -> str | None:
    """Why ``data_dir`` has nothing to show (a sentence for the page), or None when it has."""
    if not data_dir.is_dir():
        return (
            f"No history folder at {data_dir}. Run `make demo` first, or point "
            "`gridflex app --data-dir` (or the sidebar) at a history folder."
        )
    if not any(any((data_dir / stream).glob(PART_GLOB)) for stream in STREAMS):
        return f"No history in {data_dir} yet: no telemetry, frequency or dispatch recorded."
    return None


def open_history(data_dir: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB over ``data_dir`` with every history and billing view (missing streams: empty)."""
    return connect(data_dir)


def has_view(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the connection has the view ``name`` (the billing views came later)."""
    rows = con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [name]).fetchall()
    return bool(rows[0][0])


#: A query's lower time bound: the parameter, or everything when it is NULL.
_SINCE: Final = "coalesce(?::BIGINT, -9223372036854775807)"


def newest_ms(con: duckdb.DuckDBPyConnection, view: str, column: str) -> int | None:
    """The largest ``column`` of ``view`` (one of the history's time columns), None if empty."""
    rows = con.execute(f"SELECT max({column}) FROM {view}").fetchall()  # names from the code
    value = rows[0][0]
    return None if value is None else int(value)


def since(newest: int | None, span_ms: int | None) -> int | None:
    """The start of a window of ``span_ms`` that ends at ``newest`` (None: no bound)."""
    return None if newest is None or span_ms is None else newest - span_ms


def _frame(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None
) -> pl.DataFrame:
    return con.sql(sql, params=params).pl()


def fmt(value: object, spec: str, unit: str = "", *, scale: float = 1.0) -> str:
    """``value`` (a row value or a polars aggregate) formatted, ``n/a`` when not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return "n/a"
    return f"{value * scale:{spec}}{unit}"


# --------------------------------------------------------------------------- fleet

_FLEET: Final = """
WITH t AS (
    SELECT site, asset, any_value(kind) AS kind, max(ts_ms) AS ts_ms,
           arg_max(power_w, ts_ms) AS power_w, arg_max(soc_pct, ts_ms) AS soc_pct,
           arg_max(setpoint_w, ts_ms) AS setpoint_w, arg_max(status, ts_ms) AS status,
           arg_max(device_status, ts_ms) AS device_status, arg_max(ev_v2x, ts_ms) AS ev_v2x
    FROM telemetry GROUP BY site, asset
), f AS (
    SELECT site, asset, arg_max(v2x, ts_ms) AS v2x,
           arg_max(max_charge_w, ts_ms) AS max_charge_w,
           arg_max(max_discharge_w, ts_ms) AS max_discharge_w,
           arg_max(discharge_energy_wh, ts_ms) AS discharge_energy_wh,
           arg_max(must_charge_w, ts_ms) AS must_charge_w
    FROM forecasts GROUP BY site, asset
)
SELECT t.site, t.asset, t.kind, make_timestamptz(t.ts_ms * 1000) AS last_reading, t.ts_ms,
       t.power_w, t.soc_pct, t.setpoint_w, t.status, t.device_status,
       coalesce(f.v2x, t.ev_v2x) AS v2x,
       f.max_charge_w, f.max_discharge_w, f.discharge_energy_wh, f.must_charge_w
FROM t LEFT JOIN f USING (site, asset)
ORDER BY t.site, t.asset
"""


def fleet(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """One row per asset: its newest reading and the flexibility of its newest forecast.

    Columns: ``site, asset, kind, last_reading, ts_ms, power_w, soc_pct, setpoint_w,
    status, device_status, v2x`` (the forecast's, else the car's own), ``max_charge_w,
    max_discharge_w, discharge_energy_wh, must_charge_w`` (NULL without a forecast).
    """
    return _frame(con, _FLEET)


def assets(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The assets with telemetry, sorted."""
    rows = con.execute(f"SELECT DISTINCT asset FROM {TELEMETRY} ORDER BY asset").fetchall()
    return [str(r[0]) for r in rows]


# --------------------------------------------------------------------------- frequency


@dataclass(frozen=True)
class Deadband:
    """Where the fleet does not respond: ``nominal_hz - under_hz`` .. ``nominal_hz + over_hz``."""

    nominal_hz: float
    under_hz: float
    over_hz: float
    source: str

    @property
    def low_hz(self) -> float:
        """Lower edge of the deadband."""
        return self.nominal_hz - self.under_hz

    @property
    def high_hz(self) -> float:
        """Upper edge of the deadband."""
        return self.nominal_hz + self.over_hz


def deadband(data_dir: Path, nominal_hz: float | None = None) -> Deadband:
    """The deadband of the site file beside the history, else IEEE 1547's default.

    ``[dispatch] mode = "fcr"`` uses ``[dispatch.fcr] deadband_hz``; otherwise the droop's
    ``db_uf_hz`` / ``db_of_hz``. Without a readable site file: 0.036 Hz each side of
    ``nominal_hz`` (50 Hz when not given).
    """
    path = data_dir / SITE_FILE
    if path.is_file():
        try:
            site = load_site(path)
        except (ConfigError, OSError) as exc:
            log.warning("app: cannot read %s for the deadband: %s", path, exc)
        else:
            nominal = float(site.nominal_frequency_hz)
            dispatch = site.dispatch
            if dispatch.mode == "fcr":
                band = dispatch.fcr.deadband_hz
                return Deadband(nominal, band, band, f"{path.name}: FCR deadband")
            droop = dispatch.droop
            return Deadband(nominal, droop.db_uf_hz, droop.db_of_hz, f"{path.name}: droop")
    return Deadband(nominal_hz or 50.0, 0.036, 0.036, "IEEE 1547 default (no site file)")


def frequency(con: duckdb.DuckDBPyConnection, since_ms: int | None = None) -> pl.DataFrame:
    """The 1 s frequency windows from ``since_ms`` on (None: all), in time order.

    Columns ``window_start, window_start_ms, nominal_hz, mean_hz, min_hz, max_hz,
    deviation_hz, rocof_hz_per_s``.
    """
    return _frame(
        con,
        "SELECT window_start, window_start_ms, nominal_hz, mean_hz, min_hz, max_hz, "
        "deviation_hz, rocof_hz_per_s FROM grid_frequency "
        f"WHERE window_start_ms >= {_SINCE} ORDER BY window_start_ms",
        [since_ms],
    )


def fleet_response(con: duckdb.DuckDBPyConnection, since_ms: int | None = None) -> pl.DataFrame:
    """The fleet's power per second: each asset's mean in the second, summed over assets.

    From ``since_ms`` on (None: all).

    Columns ``t, t_ms, power_w, setpoint_w, assets`` (+ charge, - discharge), in time order.
    """
    return _frame(
        con,
        f"""
        WITH per_asset AS (
            SELECT asset, ts_ms // 1000 * 1000 AS t_ms,
                   avg(power_w) AS power_w, avg(setpoint_w) AS setpoint_w
            FROM telemetry WHERE ts_ms >= {_SINCE} GROUP BY asset, t_ms
        )
        SELECT make_timestamptz(t_ms * 1000) AS t, t_ms, sum(power_w) AS power_w,
               sum(setpoint_w) AS setpoint_w, count(*) AS assets
        FROM per_asset GROUP BY t_ms ORDER BY t_ms
        """,
        [since_ms],
    )


# --------------------------------------------------------------------------- dispatch

_TIMELINE: Final = """
SELECT c.issued, c.issued_ms, c.asset, c.command_id, c.mode, c.setpoint_w, c.base_setpoint_w,
       c.reason, c.freq_hz,
       coalesce(a.result, 'no ack') AS result, a.applied_w, a.readback_w, a.rules,
       a.reason AS ack_reason, a.latency_from_issued_ms
FROM (SELECT * FROM commands WHERE issued_ms >= {since}) c
LEFT JOIN (
    SELECT site, command_id, arg_max(result, ts_ms) AS result,
           arg_max(applied_w, ts_ms) AS applied_w, arg_max(readback_w, ts_ms) AS readback_w,
           arg_max(rules, ts_ms) AS rules, arg_max(reason, ts_ms) AS reason,
           arg_max(latency_from_issued_ms, ts_ms) AS latency_from_issued_ms
    FROM acks WHERE issued_ms >= {since} GROUP BY site, command_id
) a USING (site, command_id)
ORDER BY c.issued_ms, c.asset
"""


def dispatch_timeline(con: duckdb.DuckDBPyConnection, since_ms: int | None = None) -> pl.DataFrame:
    """The commands issued from ``since_ms`` on (None: all), each with its newest ack.

    ``result`` is ``no ack`` for a command without one.

    Columns ``issued, issued_ms, asset, command_id, mode, setpoint_w, base_setpoint_w,
    reason, freq_hz, result, applied_w, readback_w, rules, ack_reason,
    latency_from_issued_ms``, in issue order.
    """
    return _frame(con, _TIMELINE.format(since=_SINCE), [since_ms, since_ms])


def acks_by_result(con: duckdb.DuckDBPyConnection, since_ms: int | None = None) -> pl.DataFrame:
    """How many acks of each result (commands issued from ``since_ms`` on): ``result, acks``."""
    return _frame(
        con,
        f"SELECT result, count(*) AS acks FROM acks WHERE issued_ms >= {_SINCE} "
        "GROUP BY result ORDER BY acks DESC, result",
        [since_ms],
    )


def clamp_rules(con: duckdb.DuckDBPyConnection, since_ms: int | None = None) -> pl.DataFrame:
    """How often each safety rule changed a command (issued from ``since_ms`` on).

    Columns ``rule, acks``, most first.
    """
    return _frame(
        con,
        "SELECT rule, count(*) AS acks FROM "
        f"(SELECT unnest(rules) AS rule FROM acks WHERE issued_ms >= {_SINCE}) "
        "GROUP BY rule ORDER BY acks DESC, rule",
        [since_ms],
    )


def latencies(con: duckdb.DuckDBPyConnection, since_ms: int | None = None) -> pl.DataFrame:
    """Command-to-confirmed-write latencies of the acks that wrote something.

    Of the commands issued from ``since_ms`` on (None: all).

    Columns ``asset, result, latency_from_issued_ms, latency_from_telemetry_ms``.
    """
    return _frame(
        con,
        "SELECT asset, result, latency_from_issued_ms, latency_from_telemetry_ms FROM acks "
        f"WHERE latency_from_issued_ms IS NOT NULL AND issued_ms >= {_SINCE} ORDER BY ts_ms",
        [since_ms],
    )


# --------------------------------------------------------------------------- billing


def settlements(con: duckdb.DuckDBPyConnection) -> pl.DataFrame | None:
    """The ``settlements`` view with UTC interval times, or None when the view is absent.

    Columns ``site, asset, session_id, interval_start, interval_start_ms, interval_end_ms,
    energy_import_wh, energy_export_wh, quality``, by interval then asset.
    """
    if not has_view(con, "settlements"):
        return None
    return _frame(
        con,
        "SELECT site, asset, session_id, make_timestamptz(interval_start_ms * 1000) "
        "AS interval_start, interval_start_ms, interval_end_ms, energy_import_wh, "
        "energy_export_wh, quality FROM settlements "
        "ORDER BY interval_start_ms, site, asset, session_id NULLS FIRST",
    )


def settlement_totals(table: pl.DataFrame) -> pl.DataFrame:
    """Per asset: ``asset, energy_import_wh, energy_export_wh, intervals, flagged``.

    ``flagged`` counts the intervals whose quality is not ``ok`` (gaps, register resets).
    """
    return (
        table.group_by("asset")
        .agg(
            pl.col("energy_import_wh").sum(),
            pl.col("energy_export_wh").sum(),
            pl.col("interval_start_ms").n_unique().alias("intervals"),
            (pl.col("quality") != "ok").sum().alias("flagged"),
        )
        .sort("asset")
    )


def sessions(con: duckdb.DuckDBPyConnection) -> pl.DataFrame | None:
    """The ``sessions`` view (one row per charging session), or None when it is absent."""
    if not has_view(con, "sessions"):
        return None
    return _frame(
        con,
        'SELECT asset, session_id, start, "end", energy_import_wh, energy_export_wh, '
        "soc_start_pct, soc_end_pct, quality FROM sessions ORDER BY start_ms, asset",
    )


# --------------------------------------------------------------------------- one asset


def asset_history(
    con: duckdb.DuckDBPyConnection, asset: str, since_ms: int | None = None
) -> pl.DataFrame:
    """One asset's readings from ``since_ms`` on (None: all), in time order.

    Columns ``ts, ts_ms, power_w, setpoint_w, soc_pct, status, energy_import_wh,
    energy_export_wh``.
    """
    return _frame(
        con,
        "SELECT ts, ts_ms, power_w, setpoint_w, soc_pct, status, energy_import_wh, "
        f"energy_export_wh FROM telemetry WHERE asset = ? AND ts_ms >= {_SINCE} ORDER BY ts_ms",
        [asset, since_ms],
    )


def register_energy(readings: pl.DataFrame) -> tuple[float, float]:
    """Import and export Wh the registers counted over one asset's ``readings``.

    The sum of their increases in time order, so a register reset counts 0, not minus the
    register's value.
    """
    row = readings.select(
        pl.col("energy_import_wh").drop_nulls().diff().clip(lower_bound=0).sum(),
        pl.col("energy_export_wh").drop_nulls().diff().clip(lower_bound=0).sum(),
    ).row(0)
    return float(row[0] or 0.0), float(row[1] or 0.0)


def asset_forecast(
    con: duckdb.DuckDBPyConnection, asset: str, since_ms: int | None = None
) -> pl.DataFrame:
    """One asset's forecasts from ``since_ms`` on (None: all), in time order.

    Columns ``ts, ts_ms, soc_pct, soc_at_departure_pct, target_soc_pct, departure,
    max_charge_w, max_discharge_w, discharge_energy_wh``.
    """
    return _frame(
        con,
        "SELECT ts, ts_ms, soc_pct, soc_at_departure_pct, target_soc_pct, departure, "
        "max_charge_w, max_discharge_w, discharge_energy_wh FROM forecasts WHERE asset = ? "
        f"AND ts_ms >= {_SINCE} ORDER BY ts_ms",
        [asset, since_ms],
    )
