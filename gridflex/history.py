"""The Parquet history: its file layout and schemas, DuckDB views over it, ``gridflex query``.

Layout (hive partitioning by stream and UTC date of the measurement)::

    {data_dir}/telemetry/date=YYYY-MM-DD/part-*.parquet
    {data_dir}/grid_frequency/date=YYYY-MM-DD/part-*.parquet
    {data_dir}/forecasts/date=YYYY-MM-DD/part-*.parquet
    {data_dir}/commands/date=YYYY-MM-DD/part-*.parquet
    {data_dir}/acks/date=YYYY-MM-DD/part-*.parquet
    {data_dir}/status_changes/date=YYYY-MM-DD/part-*.parquet
    {data_dir}/transactions/date=YYYY-MM-DD/part-*.parquet
    {data_dir}/events/date=YYYY-MM-DD/part-*.parquet

Writers (``pipelines.history_sink``) write each file under a hidden temporary name in the
same directory and rename it into place, so a reader only ever sees whole files; the views
read ``part-*.parquet`` only and never see the temporary names. The data is
at-least-once, so the views de-duplicate: ``telemetry`` on ``(site, asset, boot, seq)``,
``grid_frequency`` on ``(site, window_start_ms)``, ``forecasts`` on ``(site, asset,
ts_ms)``, ``commands`` on ``(site, command_id)``, ``acks`` on ``(site, asset, command_id,
result, ts_ms)``, ``status_changes`` on ``(site, asset, ts_ms)`` and the change (and a row
equal in state to the asset's previous one is not a change), ``transactions`` on ``(site, asset,
transaction_id)`` (one row per transaction from its ``started`` and ``ended`` events),
``events`` on ``(site, asset, event, fault_code, ts_ms)``. The ``events`` stream (faults
and other notable events, :mod:`gridflex.events`) is written by the process that
detects them, not by the pipeline.

Every file carries key-value metadata (:data:`META_STREAM`, :data:`META_SCHEMA_VERSION`,
:data:`META_WRITER`, :func:`file_metadata`); the views read files without it too.
Compaction and retention: :mod:`gridflex.history_store`. See ``docs/history.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa

__all__ = [
    "ACKS",
    "ACKS_SCHEMA",
    "COMMANDS",
    "COMMANDS_SCHEMA",
    "COMPACT_PREFIX",
    "EVENTS",
    "EVENTS_SCHEMA",
    "FORECASTS",
    "FORECASTS_SCHEMA",
    "GRID_FREQUENCY",
    "GRID_FREQUENCY_SCHEMA",
    "META_SCHEMA_VERSION",
    "META_STREAM",
    "META_WRITER",
    "SCHEMAS",
    "SCHEMA_VERSIONS",
    "STATUS_CHANGES",
    "STATUS_CHANGES_SCHEMA",
    "STREAMS",
    "TELEMETRY",
    "TELEMETRY_SCHEMA",
    "TRANSACTIONS",
    "TRANSACTIONS_SCHEMA",
    "add_arguments",
    "connect",
    "file_metadata",
    "main",
    "partition_dir",
    "refresh_views",
    "utc_date",
]

log = logging.getLogger(__name__)

TELEMETRY: Final = "telemetry"
GRID_FREQUENCY: Final = "grid_frequency"
FORECASTS: Final = "forecasts"
COMMANDS: Final = "commands"
ACKS: Final = "acks"
STATUS_CHANGES: Final = "status_changes"
TRANSACTIONS: Final = "transactions"
EVENTS: Final = "events"
STREAMS: Final = (
    TELEMETRY,
    GRID_FREQUENCY,
    FORECASTS,
    COMMANDS,
    ACKS,
    STATUS_CHANGES,
    TRANSACTIONS,
    EVENTS,
)

#: Glob of the finished files of one stream, relative to ``{data_dir}/{stream}``.
PART_GLOB: Final = "date=*/part-*.parquet"

TELEMETRY_SCHEMA: Final = pa.schema(
    [
        pa.field("site", pa.string(), nullable=False),
        pa.field("asset", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("ts_ms", pa.int64(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("boot", pa.string(), nullable=False),
        pa.field("power_w", pa.float64(), nullable=False),
        pa.field("freq_hz", pa.float64()),
        pa.field("voltage_v", pa.float64()),
        pa.field("current_a", pa.float64()),
        pa.field("soc_pct", pa.float64()),
        pa.field("energy_import_wh", pa.float64()),
        pa.field("energy_export_wh", pa.float64()),
        pa.field("temp_c", pa.float64()),
        pa.field("setpoint_w", pa.float64()),
        pa.field("status", pa.string()),
        pa.field("device_status", pa.string()),
        pa.field("transaction_id", pa.string()),
        pa.field("ev_departure_ms", pa.int64()),
        pa.field("ev_requested_energy_wh", pa.float64()),
        pa.field("ev_max_charge_w", pa.float64()),
        pa.field("ev_max_discharge_w", pa.float64()),
        pa.field("ev_min_soc_pct", pa.float64()),
        pa.field("ev_target_soc_pct", pa.float64()),
        pa.field("ev_v2x", pa.bool_()),
        pa.field("ev_energy_transfer_mode", pa.string()),
        # True: an energy register is lower than in the asset's previous reading of this
        # boot (pipelines.validate.check_registers); NULL in files written before the check.
        pa.field("register_decreased", pa.bool_()),
    ]
)

GRID_FREQUENCY_SCHEMA: Final = pa.schema(
    [
        pa.field("site", pa.string(), nullable=False),
        pa.field("window_start_ms", pa.int64(), nullable=False),
        pa.field("window_end_ms", pa.int64(), nullable=False),
        pa.field("nominal_hz", pa.float64(), nullable=False),
        pa.field("mean_hz", pa.float64(), nullable=False),
        pa.field("min_hz", pa.float64(), nullable=False),
        pa.field("max_hz", pa.float64(), nullable=False),
        pa.field("deviation_hz", pa.float64(), nullable=False),
        pa.field("rocof_hz_per_s", pa.float64(), nullable=False),
        pa.field("samples", pa.int64(), nullable=False),
        pa.field("assets", pa.int64(), nullable=False),
    ]
)

FORECASTS_SCHEMA: Final = pa.schema(
    [
        pa.field("site", pa.string(), nullable=False),
        pa.field("asset", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("ts_ms", pa.int64(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("soc_pct", pa.float64(), nullable=False),
        pa.field("capacity_wh", pa.float64(), nullable=False),
        pa.field("power_w", pa.float64(), nullable=False),
        pa.field("setpoint_w", pa.float64(), nullable=False),
        pa.field("departure_ms", pa.int64()),
        pa.field("target_soc_pct", pa.float64()),
        pa.field("soc_at_departure_pct", pa.float64()),
        pa.field("earliest_target_ms", pa.int64()),
        pa.field("energy_to_target_wh", pa.float64()),
        pa.field("max_charge_w", pa.float64(), nullable=False),
        pa.field("max_discharge_w", pa.float64(), nullable=False),
        pa.field("discharge_energy_wh", pa.float64(), nullable=False),
        pa.field("must_charge_w", pa.float64(), nullable=False),
        pa.field("v2x", pa.bool_(), nullable=False),
        pa.field("needs_source", pa.string(), nullable=False),
    ]
)

COMMANDS_SCHEMA: Final = pa.schema(
    [
        pa.field("site", pa.string(), nullable=False),
        pa.field("asset", pa.string(), nullable=False),
        pa.field("command_id", pa.string(), nullable=False),
        pa.field("issued_ms", pa.int64(), nullable=False),
        pa.field("setpoint_w", pa.float64(), nullable=False),
        pa.field("base_setpoint_w", pa.float64(), nullable=False),
        pa.field("valid_until_ms", pa.int64(), nullable=False),
        pa.field("mode", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("freq_hz", pa.float64()),
        pa.field("ts_ms", pa.int64(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("boot", pa.string()),
    ]
)

#: One row per ``ack/1`` the control writer published (``gridflex.contract.DispatchAck``).
ACKS_SCHEMA: Final = pa.schema(
    [
        pa.field("site", pa.string(), nullable=False),
        pa.field("asset", pa.string(), nullable=False),
        pa.field("ts_ms", pa.int64(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("command_id", pa.string(), nullable=False),
        pa.field("result", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("requested_w", pa.float64(), nullable=False),
        pa.field("applied_w", pa.float64()),
        pa.field("readback_w", pa.float64()),
        pa.field("rules", pa.list_(pa.string()), nullable=False),
        pa.field("issued_ms", pa.int64(), nullable=False),
        pa.field("latency_from_issued_ms", pa.int64()),
        pa.field("latency_from_telemetry_ms", pa.int64()),
    ]
)

#: One row per change of an asset's retained ``status/1`` (``gridflex.contract.AssetStatus``):
#: ``online``, ``state``, ``faults`` or ``transaction_id`` differ from the asset's last row.
STATUS_CHANGES_SCHEMA: Final = pa.schema(
    [
        pa.field("site", pa.string(), nullable=False),
        pa.field("asset", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("ts_ms", pa.int64(), nullable=False),
        pa.field("seq", pa.int64()),
        pa.field("boot", pa.string()),
        pa.field("online", pa.bool_(), nullable=False),
        pa.field("state", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("faults", pa.list_(pa.string()), nullable=False),
        pa.field("transaction_id", pa.string()),
    ]
)

#: One row per ``session/1`` event of the CSMS (``gridflex.contract.ChargingSession``):
#: a transaction's ``started`` and ``ended``.
TRANSACTIONS_SCHEMA: Final = pa.schema(
    [
        pa.field("site", pa.string(), nullable=False),
        pa.field("asset", pa.string(), nullable=False),
        pa.field("ts_ms", pa.int64(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("start_ms", pa.int64(), nullable=False),
        pa.field("end_ms", pa.int64()),
        pa.field("meter_start_wh", pa.float64()),
        pa.field("meter_stop_wh", pa.float64()),
        pa.field("export_start_wh", pa.float64()),
        pa.field("export_stop_wh", pa.float64()),
        pa.field("soc_start_pct", pa.float64()),
        pa.field("soc_end_pct", pa.float64()),
        pa.field("id_token_hash", pa.string()),
        pa.field("stopped_reason", pa.string()),
    ]
)

#: One row per event a process recorded (``gridflex.events``): a fault with its code, ...
EVENTS_SCHEMA: Final = pa.schema(
    [
        pa.field("site", pa.string(), nullable=False),
        pa.field("asset", pa.string()),
        pa.field("ts_ms", pa.int64(), nullable=False),
        pa.field("component", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("fault_code", pa.string()),
        pa.field("detail", pa.string()),
    ]
)

SCHEMAS: Final[dict[str, pa.Schema]] = {
    TELEMETRY: TELEMETRY_SCHEMA,
    GRID_FREQUENCY: GRID_FREQUENCY_SCHEMA,
    FORECASTS: FORECASTS_SCHEMA,
    COMMANDS: COMMANDS_SCHEMA,
    ACKS: ACKS_SCHEMA,
    STATUS_CHANGES: STATUS_CHANGES_SCHEMA,
    TRANSACTIONS: TRANSACTIONS_SCHEMA,
    EVENTS: EVENTS_SCHEMA,
}

#: Version of each stream's file schema, raised when a column is added or changes meaning
#: (telemetry 2: ``device_status`` and ``register_decreased``). Files written before the
#: versions existed carry no metadata; the views read them by column name.
SCHEMA_VERSIONS: Final[dict[str, int]] = dict.fromkeys(STREAMS, 1) | {TELEMETRY: 2}

#: Key-value metadata of every history file: its stream, schema version and writer.
META_STREAM: Final = "gridflex.stream"
META_SCHEMA_VERSION: Final = "gridflex.schema_version"
META_WRITER: Final = "gridflex.writer"


def file_metadata(stream: str, **extra: str) -> dict[str, str]:
    """The key-value metadata of a ``stream`` file: stream, schema version, writer.

    ``extra`` adds keys under ``gridflex.`` (``compacted_from=...``).
    """
    from gridflex import __version__

    meta = {
        META_STREAM: stream,
        META_SCHEMA_VERSION: str(SCHEMA_VERSIONS[stream]),
        META_WRITER: f"gridflex {__version__}",
    }
    meta.update({f"gridflex.{key}": value for key, value in extra.items()})
    return meta


_DUCKDB_TYPES: Final = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.list_(pa.string()): "VARCHAR[]",
}


def utc_date(ts_ms: int) -> dt.date:
    """Return the UTC calendar date of an epoch-millisecond time."""
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ts_ms)).date()


def partition_dir(data_dir: str | Path, stream: str, day: dt.date) -> Path:
    """Return ``{data_dir}/{stream}/date=YYYY-MM-DD``."""
    if stream not in SCHEMAS:
        raise ValueError(f"unknown history stream {stream!r}; expected one of {STREAMS}")
    return Path(data_dir) / stream / f"date={day.isoformat()}"


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
        [f"CAST(NULL AS {_DUCKDB_TYPES[f.type]}) AS {f.name}" for f in SCHEMAS[stream]]
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

_EVENTS_VIEW: Final = """
CREATE OR REPLACE VIEW events AS
SELECT
    site, asset, ts_ms, make_timestamptz(ts_ms * 1000) AS ts, component, event, fault_code,
    detail, date
FROM {source}
QUALIFY row_number() OVER (PARTITION BY site, asset, event, fault_code, ts_ms) = 1
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


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``gridflex query``."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", type=Path, help="history directory")
    where.add_argument("--site", type=Path, help="site file; its history.dir is used")
    parser.add_argument(
        "sql",
        help="one SQL query over the views telemetry, grid_frequency, forecasts, commands, "
        "acks, status_changes, transactions and the billing views",
    )


def _csv_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def write_csv(description: Iterable[Any], rows: Iterable[Iterable[Any]], out: Any = None) -> None:
    """Write a header and rows as CSV to ``out`` (default: standard output)."""
    writer = csv.writer(out if out is not None else sys.stdout, lineterminator="\n")
    writer.writerow([column[0] for column in description])
    for row in rows:
        writer.writerow([_csv_value(v) for v in row])


def _data_dir_of(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        data_dir = Path(args.data_dir)
        if not data_dir.is_dir():
            raise ValueError(f"--data-dir {data_dir}: expected an existing history directory")
        return data_dir
    from gridflex.config import load_site  # only needed for --site

    return Path(load_site(args.site).history.dir)


def main(args: argparse.Namespace) -> int:
    """Run one query and print the result as CSV with a header.

    Returns 2 on a bad query, a bad site file or a ``--data-dir`` that is not a directory
    (a typo must not look like an empty history). A ``--site`` whose history folder does not
    exist yet queries empty views: nothing has been recorded.
    """
    try:
        data_dir = _data_dir_of(args)
    except Exception as exc:  # a config error is reported, not raised
        sys.stderr.write(f"gridflex query: {exc}\n")
        return 2
    con = connect(data_dir)
    try:
        result = con.execute(args.sql)
        description = result.description
        if description is None:
            return 0

        def batches() -> Iterable[tuple[Any, ...]]:
            while chunk := result.fetchmany(10_000):
                yield from chunk

        write_csv(description, batches())
    except duckdb.Error as exc:
        sys.stderr.write(f"gridflex query: {type(exc).__name__}: {exc}\n")
        return 2
    finally:
        con.close()
    sys.stdout.flush()
    return 0
