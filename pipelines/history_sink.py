"""Parquet history sink: rows buffered per stream, written atomically, de-duplicated.

The file layout and schemas are the history contract in :mod:`gridflex.history`. Here:

* pure row builders (:func:`telemetry_row`, :func:`frequency_row`, :func:`ack_row`, ...);
* :class:`RecentKeys`, a bounded per-asset memory of ``(boot, seq)`` for de-duplicating
  telemetry, and :class:`RecentAcks`, the same for acks (their ``(command_id, result,
  ts_ms)``);
* :func:`write_parquet_atomic` (temporary name in the same directory, fsync, rename,
  fsync of the directory);
* :class:`ParquetStreamWriter`, a buffer that flushes every ``flush_rows`` rows or
  ``flush_interval_s`` seconds, one file per UTC date;
* :class:`HistorySink`, the Bytewax sink around it. Items are ``(key, row)``; Bytewax
  routes a key always to the same partition, so keying telemetry by asset keeps an
  asset's de-duplication memory in one place.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol
from zlib import crc32

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from gridflex.contract import DispatchAck, DispatchCommand, Forecast, GridFrequency, Telemetry
from gridflex.history import (
    ACKS,
    COMMANDS,
    FORECASTS,
    GRID_FREQUENCY,
    SCHEMAS,
    TELEMETRY,
    file_metadata,
    partition_dir,
    utc_date,
)
from pipelines.history_rejects import convert_rows, set_aside

__all__ = [
    "ACK_MEMORY",
    "HistorySink",
    "ParquetStreamWriter",
    "RecentAcks",
    "RecentKeys",
    "RowMemory",
    "ack_row",
    "command_row",
    "forecast_row",
    "frequency_row",
    "telemetry_row",
    "write_parquet_atomic",
]

log = logging.getLogger(__name__)

Row = dict[str, Any]


def fields_row(payload: object, fields: Iterable[str]) -> Row:
    """A parsed payload's attributes named ``fields`` (its stream's columns), as a row."""
    values = payload.__dict__
    return {name: values[name] for name in fields}


#: Acks remembered per asset by the ``acks`` sink (a QoS 1 redelivery repeats a recent one).
ACK_MEMORY = 64
#: Rows being gathered, by column, in the stream's schema order.
Columns = dict[str, list[Any]]

#: Columns taken as they are from the reading (the ``ev_*`` ones are flattened).
_TELEMETRY_FIELDS = tuple(
    n for n in SCHEMAS[TELEMETRY].names if not n.startswith("ev_") and n != "register_decreased"
)
_EV_FIELDS = (
    "departure_ms",
    "requested_energy_wh",
    "max_charge_w",
    "max_discharge_w",
    "min_soc_pct",
    "target_soc_pct",
    "v2x",
    "energy_transfer_mode",
)


# --------------------------------------------------------------------------- rows


def telemetry_row(telemetry: Telemetry, *, register_decreased: bool | None = None) -> Row:
    """Flatten a telemetry reading into a ``telemetry`` history row (EV needs as ``ev_*``).

    ``register_decreased`` is the flag of :func:`pipelines.validate.check_registers`
    (None: not checked).
    """
    row = fields_row(telemetry, _TELEMETRY_FIELDS)
    ev = telemetry.ev
    for name in _EV_FIELDS:
        row[f"ev_{name}"] = getattr(ev, name) if ev is not None else None
    row["register_decreased"] = register_decreased
    return row


_FORECAST_FIELDS = SCHEMAS[FORECASTS].names
_COMMAND_FIELDS = SCHEMAS[COMMANDS].names
_ACK_FIELDS = SCHEMAS[ACKS].names


def forecast_row(forecast: Forecast) -> Row:
    """Turn a published forecast into a ``forecasts`` history row."""
    return fields_row(forecast, _FORECAST_FIELDS)


def command_row(command: DispatchCommand) -> Row:
    """Turn a published command into a ``commands`` history row."""
    return fields_row(command, _COMMAND_FIELDS)


def ack_row(ack: DispatchAck) -> Row:
    """Turn an ack of the control writer into an ``acks`` history row (``rules`` a list)."""
    row = fields_row(ack, _ACK_FIELDS)
    row["rules"] = list(ack.rules)
    return row


def frequency_row(frequency: GridFrequency) -> Row:
    """Turn a published window into a ``grid_frequency`` history row."""
    return {
        "site": frequency.site,
        "window_start_ms": frequency.window_start_ms,
        "window_end_ms": frequency.window_end_ms,
        "nominal_hz": frequency.nominal_hz,
        "mean_hz": frequency.mean_hz,
        "min_hz": frequency.min_hz,
        "max_hz": frequency.max_hz,
        "deviation_hz": frequency.deviation_hz,
        "rocof_hz_per_s": frequency.rocof_hz_per_s,
        "samples": frequency.samples,
        "assets": frequency.assets,
    }


# --------------------------------------------------------------------------- de-dup


class RowMemory(Protocol):
    """A bounded memory of recent rows of one stream, to drop redeliveries."""

    def seen_row(self, row: Row) -> bool:
        """Record the row's key; return True when it was already recorded (a duplicate)."""
        ...


class RecentKeys:
    """Bounded memory of the ``seq`` numbers seen per asset and boot: the last ``capacity``.

    MQTT QoS 1 redelivers what was in flight around a reconnect, i.e. a few recent
    messages, so a short per-asset memory catches them; older redeliveries (after a
    pipeline restart) are removed by the history views.

    Per asset and boot (the current one and the one before) it keeps the highest ``seq``
    and a bit mask of the ``capacity`` numbers below it: a few objects per asset, not one
    per key. A million remembered keys as Python objects made every full garbage
    collection of the pipeline take ~130 ms, a pause every reading waiting behind it felt.
    """

    #: Boots remembered per asset (a collector restart starts a new one).
    BOOTS = 2

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._full = (1 << capacity) - 1
        self._seen: dict[str, dict[str, list[int]]] = {}

    def seen_before(self, asset: str, boot: str, seq: int) -> bool:
        """Record the key; return True when it was already recorded (a duplicate)."""
        boots = self._seen.get(asset)
        if boots is None:
            boots = self._seen[asset] = {}
        state = boots.get(boot)
        if state is None:
            if len(boots) >= self.BOOTS:
                del boots[next(iter(boots))]
            boots[boot] = [seq, 1]
            return False
        top, mask = state
        if seq > top:
            state[0], state[1] = seq, ((mask << (seq - top)) | 1) & self._full
            return False
        bit = 1 << (top - seq) if top - seq < self.capacity else 0
        if bit == 0:
            return False  # older than the memory: too old to tell
        if mask & bit:
            return True
        state[1] = mask | bit
        return False

    def seen_row(self, row: Row) -> bool:
        """:meth:`seen_before` on a ``telemetry`` row's ``(asset, boot, seq)``."""
        return self.seen_before(row["asset"], row["boot"], row["seq"])


class RecentAcks:
    """Bounded memory of the last ``capacity`` acks per asset, by ``(command_id, result, ts_ms)``.

    The control writer stamps ``ts_ms`` when it makes an ack, so a broker redelivery (QoS
    1, around a reconnect) repeats all three, while a second ack of the same command (a
    ``duplicate`` delivery, a retry after ``failed``) differs in ``result`` or ``ts_ms``
    and is kept (unless it was made in the same millisecond: then the two are identical
    and one is kept). The keys are plain strings in insertion-ordered dicts: objects the garbage
    collector does not track (see :class:`RecentKeys`). Older redeliveries are removed by
    the ``acks`` view.
    """

    def __init__(self, capacity: int = ACK_MEMORY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._seen: dict[str, dict[str, None]] = {}

    def seen_before(self, asset: str, command_id: str, result: str, ts_ms: int) -> bool:
        """Record the key; return True when it was already recorded (a duplicate)."""
        keys = self._seen.get(asset)
        if keys is None:
            keys = self._seen[asset] = {}
        key = f"{ts_ms}|{result}|{command_id}"
        if key in keys:
            return True
        if len(keys) >= self.capacity:
            del keys[next(iter(keys))]
        keys[key] = None
        return False

    def seen_row(self, row: Row) -> bool:
        """:meth:`seen_before` on an ``acks`` row."""
        return self.seen_before(row["asset"], row["command_id"], row["result"], row["ts_ms"])


# --------------------------------------------------------------------------- files


def write_parquet_atomic(
    table: pa.Table, path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Write ``table`` to ``path`` so that readers see either no file or the whole file.

    The data goes to a hidden temporary name in the same directory (same file system, so
    the rename is atomic), is fsynced, renamed into place, and the directory is fsynced so
    the rename itself survives a power cut. zstd compression. ``metadata`` becomes the
    file's key-value metadata (:func:`gridflex.history.file_metadata`).
    """
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class ParquetStreamWriter:
    """Buffer rows of one history stream and write them as Parquet files.

    Not thread-safe by itself; :class:`_HistoryPartition` guards it with a lock.

    Args:
        data_dir: History root.
        stream: One of :data:`gridflex.history.STREAMS`.
        ts_column: Column whose UTC date picks the partition.
        name: Unique writer name, part of every file name (e.g. the sink partition).
        flush_rows: Flush once this many rows are buffered.
        flush_interval_s: Flush once the oldest buffered row is this old (wall clock).
        batch_rows: Rows gathered in Python lists before they become an Arrow record batch.
        clock: Monotonic clock in seconds (injectable for tests).

    """

    def __init__(
        self,
        data_dir: str | Path,
        stream: str,
        *,
        ts_column: str,
        name: str,
        flush_rows: int = 50_000,
        flush_interval_s: float = 5.0,
        batch_rows: int = 2048,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.stream = stream
        self.schema: pa.Schema = SCHEMAS[stream]
        self.ts_column = ts_column
        self.name = name
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self._clock = clock
        self._token = uuid.uuid4().hex[:8]
        self._counter = 0
        self._names: tuple[str, ...] = tuple(self.schema.names)
        self._columns: Columns = self._empty()
        self._batches: list[pa.RecordBatch] = []
        self.batch_rows = batch_rows
        self._pending = 0  # rows in self._columns
        self._count = 0
        self._oldest_s: float | None = None
        self.rows_written = 0
        #: Rows that could not be stored (set aside, ``pipelines.history_rejects``).
        self.rejected = 0
        self.files_written: list[Path] = []
        self.metadata = file_metadata(stream)
        # pyarrow imports pandas on its first Python-to-Arrow conversion, which takes
        # seconds; pay it at start-up rather than in the middle of the stream.
        pa.Table.from_pydict({name: [] for name in self.schema.names}, schema=self.schema)

    def _empty(self) -> Columns:
        return {name: [] for name in self._names}

    @property
    def buffered(self) -> int:
        """Rows waiting to be written."""
        return self._count

    def buffer(self, rows: Iterable[Row]) -> None:
        """Add rows to the buffer without writing.

        The buffer is columnar: each value goes to its column's list as it arrives (about
        a microsecond a row in the caller's thread), and every ``batch_rows`` rows the
        lists become an Arrow record batch (a millisecond or two). So a flush never takes
        tens of thousands of row dicts apart in the writer thread while holding the GIL the
        dataflow needs, and a full garbage collection never walks a large buffer (Arrow
        memory is invisible to it; a list of 50,000 values is not).
        """
        before = self._count
        appenders = self._appenders()
        for row in rows:
            for name, append in appenders:
                append(row[name])
            self._count += 1
            self._pending += 1
            if self._pending >= self.batch_rows:
                self._seal()
                appenders = self._appenders()
        if self._oldest_s is None and self._count > before:
            self._oldest_s = self._clock()

    def _appenders(self) -> list[tuple[str, Callable[[Any], None]]]:
        return [(name, self._columns[name].append) for name in self._names]

    def _seal(self) -> None:
        """Turn the pending lists into a record batch."""
        if self._pending:
            batch, rejected = convert_rows(self._columns, self.schema)
            if batch is not None:
                self._batches.append(batch)
            if rejected:
                self.rejected += len(rejected)
                set_aside(self.data_dir, self.stream, rejected)
            self._columns, self._pending = self._empty(), 0

    def add(self, rows: Iterable[Row]) -> None:
        """Buffer rows, and write them when the buffer is full or old (single-threaded use)."""
        self.buffer(rows)
        if self.due():
            self.flush()

    def due(self) -> bool:
        """True when the buffer should be written now."""
        if not self._count:
            return False
        if self._count >= self.flush_rows:
            return True
        return self._oldest_s is not None and (
            self._clock() - self._oldest_s >= self.flush_interval_s
        )

    def take(self) -> list[pa.RecordBatch]:
        """Empty the buffer and return it as record batches (to :meth:`write` elsewhere)."""
        self._seal()
        batches, self._batches = self._batches, []
        self._count, self._oldest_s = 0, None
        return batches

    def write(self, batches: list[pa.RecordBatch]) -> list[Path]:
        """Write buffered record batches, one file per UTC date; return the new files."""
        if not batches:
            return []
        table = pa.Table.from_batches(batches, schema=self.schema)
        table = table.replace_schema_metadata(self.metadata)  # into every file
        ts = table[self.ts_column]
        bounds = pc.min_max(ts).as_py()
        first, last = utc_date(bounds["min"]), utc_date(bounds["max"])
        if first == last:
            parts = [(first, table)]
        else:  # rows around midnight: one file per day
            days = pc.cast(pc.cast(ts, pa.timestamp("ms", tz="UTC")), pa.date32())
            parts = [
                (day, table.filter(pc.equal(days, pa.scalar(day, type=pa.date32()))))
                for day in sorted(set(days.to_pylist()))
            ]
        written = []
        for day, part in parts:
            self._counter += 1
            file_name = f"part-{self.name}-{self._token}-{self._counter:06d}.parquet"
            path = partition_dir(self.data_dir, self.stream, day) / file_name
            write_parquet_atomic(part, path)
            written.append(path)
            log.debug("wrote %d %s rows to %s", part.num_rows, self.stream, path)
        self.rows_written += table.num_rows
        self.files_written.extend(written)
        return written

    def flush(self) -> list[Path]:
        """Write every buffered row now; return the new files."""
        return self.write(self.take())


# --------------------------------------------------------------------------- Bytewax sink


class _HistoryPartition(StatefulSinkPartition[Row, None]):
    """One sink partition: de-dup and buffer in the dataflow, write in a background thread.

    The dataflow thread only appends to the buffer (under a lock held for microseconds);
    a writer thread takes the buffer when it is full or old and writes it, so a flush never
    stalls the dataflow (a stall longer than the window clock's idle timeout would make
    readings late). A failed write is raised in the dataflow at the next batch.
    """

    def __init__(self, writer: ParquetStreamWriter, dedup: RowMemory | None) -> None:
        self._writer = writer
        self._dedup = dedup
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._error: BaseException | None = None
        self.duplicates = 0
        self._thread = threading.Thread(
            target=self._write_loop, name=f"history-{writer.name}", daemon=True
        )
        self._thread.start()

    def _write_loop(self) -> None:
        period_s = min(max(self._writer.flush_interval_s / 4, 0.05), 1.0)
        try:
            while True:
                self._wake.wait(period_s)
                self._wake.clear()
                with self._lock:
                    closing = self._closing
                    due = closing or self._writer.due()
                    columns = self._writer.take() if due else None
                if columns is not None:
                    self._writer.write(columns)
                if closing:
                    return
        except BaseException as exc:
            log.exception("history %s: write failed", self._writer.name)
            self._error = exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"history {self._writer.name}: write failed") from self._error

    def write_batch(self, values: list[Row]) -> None:
        """Buffer a batch, dropping rows the stream's memory has seen recently."""
        self._raise_if_failed()
        if self._dedup is not None:
            fresh = []
            for row in values:
                if self._dedup.seen_row(row):
                    self.duplicates += 1
                    log.debug("duplicate %s row of %s dropped", self._writer.stream, row["asset"])
                else:
                    fresh.append(row)
            values = fresh
        with self._lock:
            self._writer.buffer(values)
            full = self._writer.buffered >= self._writer.flush_rows
        if full:
            self._wake.set()

    def snapshot(self) -> None:
        """No resume state: rows are at-least-once and de-duplicated downstream."""
        return None

    def close(self) -> None:
        """Write what is buffered, stop the writer thread, raise if a write failed."""
        with self._lock:
            self._closing = True
        self._wake.set()
        self._thread.join()
        self._raise_if_failed()
        log.info(
            "history %s closed: %d rows in %d files, %d duplicates dropped",
            self._writer.name,
            self._writer.rows_written,
            len(self._writer.files_written),
            self.duplicates,
        )


class HistorySink(FixedPartitionedSink[Row, None]):
    """Bytewax sink writing one history stream as Parquet under ``data_dir``.

    Args:
        data_dir: History root.
        stream: One of :data:`gridflex.history.STREAMS`; ``"telemetry"`` is de-duplicated
            on asset, boot, seq here and ``"acks"`` on asset, command_id, result, ts_ms
            (recent keys: :class:`RecentKeys`, :class:`RecentAcks`), every stream in its
            view.
        partitions: Number of sink partitions (files are written in parallel per partition).
        flush_rows: Rows per flush.
        flush_interval_s: Longest time a row waits in memory.
        dedup_capacity: ``(boot, seq)`` keys remembered per asset (telemetry; acks keep
            the last :data:`ACK_MEMORY` per asset: far fewer acks than readings arrive).

    """

    def __init__(
        self,
        data_dir: str | Path,
        stream: str,
        *,
        partitions: int = 1,
        flush_rows: int = 50_000,
        flush_interval_s: float = 5.0,
        dedup_capacity: int = 1024,
    ) -> None:
        if stream not in SCHEMAS:
            raise ValueError(f"unknown history stream {stream!r}")
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.data_dir = Path(data_dir)
        self.stream = stream
        self.partitions = partitions
        self.flush_rows = flush_rows
        self.flush_interval_s = flush_interval_s
        self.dedup_capacity = dedup_capacity

    def list_parts(self) -> list[str]:
        """All partitions are reachable from every worker (a shared directory)."""
        return [f"{self.stream}-{i}" for i in range(self.partitions)]

    def part_fn(self, item_key: str) -> int:
        """Route a key (asset or site) to a partition, stably across processes."""
        return crc32(item_key.encode())

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _HistoryPartition:
        """Build the writer of one partition."""
        ts_column = "window_start_ms" if self.stream == GRID_FREQUENCY else "ts_ms"
        writer = ParquetStreamWriter(
            self.data_dir,
            self.stream,
            ts_column=ts_column,
            name=for_part,
            flush_rows=self.flush_rows,
            flush_interval_s=self.flush_interval_s,
        )
        dedup: RowMemory | None = None
        if self.stream == TELEMETRY:
            dedup = RecentKeys(self.dedup_capacity)
        elif self.stream == ACKS:
            dedup = RecentAcks(ACK_MEMORY)
        return _HistoryPartition(writer, dedup)
