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
``events`` on ``(site, event_id)`` (files from before ``event_id``: ``(site, asset, event,
fault_code, ts_ms)``). The ``events`` stream (faults and other notable events,
:mod:`gridflex.events`) comes over MQTT (``event/1``) like the others.

Every file carries key-value metadata (:data:`META_STREAM`, :data:`META_SCHEMA_VERSION`,
:data:`META_WRITER`, :func:`file_metadata`); the views read files without it too.
Compaction and retention: :mod:`gridflex.history_store`. See ``docs/history.md``.
"""

from __future__ import annotations

from gridflex.history.layout import (
    ACKS,
    ACKS_SCHEMA,
    COMMANDS,
    COMMANDS_SCHEMA,
    DUCKDB_TYPES,
    EVENTS,
    EVENTS_SCHEMA,
    FORECASTS,
    FORECASTS_SCHEMA,
    GRID_FREQUENCY,
    GRID_FREQUENCY_SCHEMA,
    META_SCHEMA_VERSION,
    META_STREAM,
    META_WRITER,
    PART_GLOB,
    SCHEMA_VERSIONS,
    SCHEMAS,
    STATUS_CHANGES,
    STATUS_CHANGES_SCHEMA,
    STREAMS,
    TELEMETRY,
    TELEMETRY_SCHEMA,
    TRANSACTIONS,
    TRANSACTIONS_SCHEMA,
    file_metadata,
    partition_dir,
    utc_date,
)
from gridflex.history.query import add_arguments, main, write_csv
from gridflex.history.views import COMPACT_PREFIX, connect, refresh_views

__all__ = [
    "ACKS",
    "ACKS_SCHEMA",
    "COMMANDS",
    "COMMANDS_SCHEMA",
    "COMPACT_PREFIX",
    "DUCKDB_TYPES",
    "EVENTS",
    "EVENTS_SCHEMA",
    "FORECASTS",
    "FORECASTS_SCHEMA",
    "GRID_FREQUENCY",
    "GRID_FREQUENCY_SCHEMA",
    "META_SCHEMA_VERSION",
    "META_STREAM",
    "META_WRITER",
    "PART_GLOB",
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
    "write_csv",
]
