"""The DuckDB views over the history (de-duplicating, typed even when empty), ``connect``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Final

import duckdb

from gridflex.history.layout import (
    ACKS,
    COMMANDS,
    DUCKDB_TYPES,
    EVENTS,
    FORECASTS,
    GRID_FREQUENCY,
    PART_GLOB,
    SCHEMAS,
    STATUS_CHANGES,
    TELEMETRY,
    TRANSACTIONS,
)


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _has_parts(data_dir: Path, stream: str) -> bool:
    return any((data_dir / stream).glob(PART_GLOB))


def _source(data_dir: Path, stream: str, *, filename: bool = False) -> str:
    """FROM clause of a stream: its Parquet files, or a typed empty relation.

    Files written before a column was added (``device_status``) lack it: the files are
    read by column name and united by name with the typed empty relation, so a missing
    column reads as NULL instead of failing the view. ``filename`` adds the file of each
    row as a ``filename`` column.
    """
    columns = (
        [f"CAST(NULL AS {DUCKDB_TYPES[f.type]}) AS {f.name}" for f in SCHEMAS[stream]]
        + ["CAST(NULL AS DATE) AS date"]
        + (["CAST(NULL AS VARCHAR) AS filename"] if filename else [])
    )
    empty = f"SELECT {', '.join(columns)} WHERE false"
    if _has_parts(data_dir, stream):
        glob = (data_dir / stream / PART_GLOB).as_posix()
        files = (
            f"read_parquet({_sql_str(glob)}, hive_partitioning = true, "
            "hive_types = {'date': 'DATE'}, union_by_name = true"
            + (", filename = true)" if filename else ")")
        )
        return f"(SELECT * FROM {files} UNION ALL BY NAME {empty})"
    return f"({empty})"


#: Name prefix of the one file ``gridflex history compact`` leaves in a partition. For
#: ``telemetry`` it holds each reading once (de-duplicated on the view's key), so a
#: partition whose only file it is needs no de-duplication (``gridflex.history_store``).
COMPACT_PREFIX: Final = "part-compact-"

_TELEMETRY_COLUMNS: Final = """
    site, asset, kind, ts_ms, make_timestamptz(ts_ms * 1000) AS ts, seq, boot,
    power_w, freq_hz, voltage_v, current_a, soc_pct, energy_import_wh, energy_export_wh,
    temp_c, setpoint_w, status, device_status, transaction_id,
    ev_departure_ms, ev_requested_energy_wh, ev_max_charge_w, ev_max_discharge_w,
    ev_min_soc_pct, ev_target_soc_pct, ev_v2x, ev_energy_transfer_mode"""

# De-duplication is one sort of every reading, most of the cost of a query over many days.
# A compacted partition (its one file is the compaction's) is read as it is; any other
# (files still arriving, or compaction between its steps) goes through the window. The
# copies of a reading share its `ts_ms`, hence its partition, so the two never overlap.
_TELEMETRY_VIEW: Final = (
    """
CREATE OR REPLACE VIEW telemetry AS
SELECT"""
    + _TELEMETRY_COLUMNS
    + """, register_decreased, date
FROM {source}
WHERE starts_with(parse_filename(filename), '{compact}')
  AND date NOT IN (SELECT date FROM {mixed})
UNION ALL
SELECT"""
    + _TELEMETRY_COLUMNS
    + """,
    bool_or(register_decreased) OVER reading AS register_decreased, date
FROM {source}
WHERE NOT starts_with(parse_filename(filename), '{compact}')
   OR date IN (SELECT date FROM {mixed})
WINDOW reading AS (PARTITION BY site, asset, boot, seq)
QUALIFY row_number() OVER (PARTITION BY site, asset, boot, seq ORDER BY ts_ms) = 1
"""
)

#: Partitions of a stream that are not one compacted file alone.
_MIXED: Final = """(
    SELECT date FROM {source} GROUP BY date
    HAVING count(DISTINCT filename) > 1
        OR NOT bool_and(starts_with(parse_filename(filename), '{compact}'))
)"""


# A window cut by a pipeline restart is written twice (the part before the stop and the
# part after it); the view keeps the row with the most samples.
_GRID_FREQUENCY_VIEW: Final = """
CREATE OR REPLACE VIEW grid_frequency AS
SELECT
    site, window_start_ms, make_timestamptz(window_start_ms * 1000) AS window_start,
    window_end_ms, make_timestamptz(window_end_ms * 1000) AS window_end,
    nominal_hz, mean_hz, min_hz, max_hz, deviation_hz, rocof_hz_per_s, samples, assets,
    date
FROM {source}
QUALIFY row_number() OVER (
    PARTITION BY site, window_start_ms ORDER BY samples DESC, window_end_ms DESC
) = 1
"""


_FORECASTS_VIEW: Final = """
CREATE OR REPLACE VIEW forecasts AS
SELECT
    site, asset, kind, ts_ms, make_timestamptz(ts_ms * 1000) AS ts, seq, soc_pct,
    capacity_wh, power_w, setpoint_w, departure_ms,
    make_timestamptz(departure_ms * 1000) AS departure, target_soc_pct, soc_at_departure_pct,
    earliest_target_ms, energy_to_target_wh, max_charge_w, max_discharge_w,
    discharge_energy_wh, must_charge_w, v2x, needs_source,
    date
FROM {source}
QUALIFY row_number() OVER (PARTITION BY site, asset, ts_ms ORDER BY seq) = 1
"""

# A command re-emitted after a restart carries the id it had: one row per id.
_COMMANDS_VIEW: Final = """
CREATE OR REPLACE VIEW commands AS
SELECT
    site, asset, command_id, issued_ms, make_timestamptz(issued_ms * 1000) AS issued,
    setpoint_w, base_setpoint_w, valid_until_ms, mode, reason, freq_hz, ts_ms, seq, boot,
    date
FROM {source}
QUALIFY row_number() OVER (PARTITION BY site, command_id ORDER BY issued_ms) = 1
"""

# An ack redelivered by the broker is the same message (the writer stamps ts_ms when it
# makes the ack): one row per (asset, command_id, result, ts_ms). Two acks of one command
# that differ in result or time are two events and both stay: the first delivery
# `applied` and a later copy `duplicate`, a `failed` attempt and the `applied` retry, or
# two writes of one command (a broken ledger). Copies acked within the same millisecond
# are byte-identical, indistinguishable from a redelivery: one row.
_ACKS_VIEW: Final = """
CREATE OR REPLACE VIEW acks AS
SELECT
    site, asset, command_id, result, reason, requested_w, applied_w, readback_w, rules,
    ts_ms, make_timestamptz(ts_ms * 1000) AS ts, seq,
    issued_ms, make_timestamptz(issued_ms * 1000) AS issued,
    latency_from_issued_ms, latency_from_telemetry_ms,
    date
FROM {source}
QUALIFY row_number() OVER (
    PARTITION BY site, asset, command_id, result, ts_ms ORDER BY seq
) = 1
"""

# A retained status is delivered again on every subscription: one row per (asset, ts_ms,
# change), and a row whose change equals the asset's previous one is none (a pipeline
# restarted without its memory of the last status). Two changes stamped in the same
# millisecond both stay.
_STATUS_CHANGES_VIEW: Final = """
CREATE OR REPLACE VIEW status_changes AS
WITH keyed AS (
    SELECT *, [online::VARCHAR, state, coalesce(transaction_id, ''),
               array_to_string(list_sort(faults), ',')] AS change
    FROM {source}
), one AS (
    SELECT * FROM keyed
    QUALIFY row_number() OVER (
        PARTITION BY site, asset, ts_ms, change
        ORDER BY seq NULLS LAST, reason NULLS LAST, boot NULLS LAST
    ) = 1
), marked AS (
    SELECT *, lag(change) OVER (
        PARTITION BY site, asset ORDER BY ts_ms, seq NULLS LAST, change
    ) AS previous
    FROM one
)
SELECT
    site, asset, kind, ts_ms, make_timestamptz(ts_ms * 1000) AS ts, seq, boot, online, state,
    reason, faults, transaction_id, date
FROM marked
WHERE previous IS NULL OR previous <> change
"""

# One row per transaction: its started and ended events (each possibly delivered twice).
# A transaction not ended yet has end_ms NULL. energy_*_wh are the meter's register
# differences over the transaction, NULL where a register is unknown.
_TRANSACTIONS_VIEW: Final = """
CREATE OR REPLACE VIEW transactions AS
WITH g AS (
    SELECT site, asset, transaction_id,
           min(start_ms) AS start_ms,
           max(end_ms) AS end_ms,
           arg_min(meter_start_wh, ts_ms) FILTER (meter_start_wh IS NOT NULL) AS meter_start_wh,
           arg_max(meter_stop_wh, ts_ms) FILTER (meter_stop_wh IS NOT NULL) AS meter_stop_wh,
           arg_min(export_start_wh, ts_ms) FILTER (export_start_wh IS NOT NULL) AS export_start_wh,
           arg_max(export_stop_wh, ts_ms) FILTER (export_stop_wh IS NOT NULL) AS export_stop_wh,
           arg_min(soc_start_pct, ts_ms) FILTER (soc_start_pct IS NOT NULL) AS soc_start_pct,
           arg_max(soc_end_pct, ts_ms) FILTER (soc_end_pct IS NOT NULL) AS soc_end_pct,
           min(id_token_hash) AS id_token_hash,
           max(stopped_reason) AS stopped_reason,
           bool_or(event = 'ended') AS ended,
           min(date) AS date
    FROM {source}
    GROUP BY site, asset, transaction_id
)
SELECT
    site, asset, transaction_id, start_ms, make_timestamptz(start_ms * 1000) AS start,
    end_ms, make_timestamptz(end_ms * 1000) AS "end", ended,
    meter_start_wh, meter_stop_wh, meter_stop_wh - meter_start_wh AS energy_import_wh,
    export_start_wh, export_stop_wh, export_stop_wh - export_start_wh AS energy_export_wh,
    soc_start_pct, soc_end_pct, id_token_hash, stopped_reason, date
FROM g
"""

# One row per event_id: a QoS 1 redelivery, or a copy written again by a pipeline that
# replayed it after a crash, repeats the id. Rows of files from before event_id (written
# by the detecting process, schema version 1) keep the old key (asset, event, code, ts_ms).
_EVENTS_VIEW: Final = """
CREATE OR REPLACE VIEW events AS
SELECT
    site, asset, ts_ms, make_timestamptz(ts_ms * 1000) AS ts, component, event, fault_code,
    detail, event_id, date
FROM {source}
QUALIFY row_number() OVER (
    PARTITION BY site, event_id,
        CASE WHEN event_id IS NULL THEN [asset, event, fault_code, ts_ms::VARCHAR] END
    ORDER BY date, component
) = 1
"""

_VIEWS: Final = {
    TELEMETRY: _TELEMETRY_VIEW,
    GRID_FREQUENCY: _GRID_FREQUENCY_VIEW,
    FORECASTS: _FORECASTS_VIEW,
    COMMANDS: _COMMANDS_VIEW,
    ACKS: _ACKS_VIEW,
    STATUS_CHANGES: _STATUS_CHANGES_VIEW,
    TRANSACTIONS: _TRANSACTIONS_VIEW,
    EVENTS: _EVENTS_VIEW,
}


def refresh_views(con: duckdb.DuckDBPyConnection, data_dir: str | Path) -> None:
    """(Re)create the views of :data:`STREAMS` (``telemetry`` ... ``events``).

    A view over a stream with files re-reads the directory on every query, so new files
    show up by themselves. A stream without files yet gets an empty view with the same
    columns and types; call this again once files exist (a new :func:`connect` does it).
    """
    root = Path(data_dir)
    for stream, view in _VIEWS.items():
        if stream == TELEMETRY:
            source = _source(root, stream, filename=True)
            mixed = _MIXED.format(source=source, compact=COMPACT_PREFIX)
            con.execute(view.format(source=source, mixed=mixed, compact=COMPACT_PREFIX))
        else:
            con.execute(view.format(source=_source(root, stream)))
    # Every stored copy of every reading: the billing views drop the copies in the one
    # window they need anyway, which is several times faster than reading `telemetry`.
    con.execute(
        f"CREATE OR REPLACE VIEW telemetry_copies AS SELECT * FROM {_source(root, TELEMETRY)}"
    )


def connect(
    data_dir: str | Path,
    *,
    database: str = ":memory:",
    interval_min: int = 15,
    max_gap_s: float = 60.0,
) -> duckdb.DuckDBPyConnection:
    """Open DuckDB with the history views over ``data_dir``.

    Args:
        data_dir: The history directory (``site.history.dir``); it may be empty or missing.
        database: DuckDB database file; the default keeps nothing on disk.
        interval_min: Settlement interval of the billing views, minutes (``[billing]``).
        max_gap_s: Readings further apart than this make a flagged gap (``[billing]``).

    Returns:
        A connection whose session time zone is UTC, with the views ``telemetry``,
        ``grid_frequency``, ``forecasts``, ``commands``, ``acks``, ``status_changes`` and
        ``transactions``, and the billing views
        of :mod:`gridflex.billing.views` (``settlements``, ``sessions``, ...).

    """
    from gridflex.billing.views import register  # reads the views made here

    con = duckdb.connect(database)
    con.execute("SET TimeZone = 'UTC'")
    # DuckDB draws its progress bar on standard output, in the middle of a CSV being written
    # there (gridflex query, gridflex billing); query_progress() still reports it. In a
    # Jupyter kernel without ipywidgets DuckDB draws no bar and refuses the setting.
    with contextlib.suppress(duckdb.InvalidInputException):
        con.execute("SET enable_progress_bar_print = false")
    refresh_views(con, data_dir)
    register(con, interval_min=interval_min, max_gap_s=max_gap_s)
    return con
