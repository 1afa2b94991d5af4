"""The history's layout: streams, their Arrow schemas, file metadata, partitions."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Final

import pyarrow as pa

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

#: One row per ``event/1`` the pipeline received (``gridflex.events``): a fault with its
#: code, ... ``event_id`` (version 2) is unique per event; files of version 1 (written by
#: the detecting process itself) lack it and read as NULL.
EVENTS_SCHEMA: Final = pa.schema(
    [
        pa.field("site", pa.string(), nullable=False),
        pa.field("asset", pa.string()),
        pa.field("ts_ms", pa.int64(), nullable=False),
        pa.field("component", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("fault_code", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("event_id", pa.string()),
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
#: (telemetry 2: ``device_status`` and ``register_decreased``; events 2: ``event_id``).
#: Files written before the versions existed carry no metadata; the views read them by
#: column name.
SCHEMA_VERSIONS: Final[dict[str, int]] = dict.fromkeys(STREAMS, 1) | {TELEMETRY: 2, EVENTS: 2}

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


#: The DuckDB type of each Arrow type the schemas use.
DUCKDB_TYPES: Final = {
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
