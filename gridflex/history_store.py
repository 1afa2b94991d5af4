"""Upkeep of the Parquet history: compaction of closed partitions, retention.

**Compaction** (:func:`compact`) merges the ``part-*.parquet`` files of each closed
partition (``{stream}/date=D`` with ``D`` before a cut-off, by default today in UTC) into
one file ``part-compact-<id>.parquet``, keeping every distinct row (exact duplicates,
which every view drops anyway, are dropped; telemetry keeps one row per reading, chosen
as the ``telemetry`` view chooses, so the view reads such a partition without
de-duplicating it) in the stream's current schema (columns that older files lack are
NULL, as the views read them). Per partition, in this order:

1. the merged file is written under a hidden temporary name (``.compact-<id>.tmp``,
   which the views' ``part-*.parquet`` glob never matches), fsynced, and its row count
   checked;
2. it is renamed to ``part-compact-<id>.parquet`` and the directory fsynced: from now on
   a reader sees the originals *and* the merged file. Every view de-duplicates on its
   key and picks among copies by their content only, so a row present twice reads as
   it did once: the answer is the same;
3. after ``grace_s`` (for readers that listed the originals to open them), the originals
   are removed and the directory fsynced.

A crash (even ``kill -9``) at any moment leaves either the originals alone (1), or the
originals and the merged file (2, 3: same answers, and the next run merges them again),
never a partial file under a visible name; a hidden ``.compact-*.tmp`` left behind is
removed by the next run. Files a writer adds to a partition while it is compacted (a late
row, a replay after a restart) are not touched; the next run merges them. The
storage-level views describe the files, so they change with them: ``telemetry_copies``
(every stored copy of every reading, which the billing views de-duplicate themselves)
counts copies, so it can differ while 2-3 last and loses the exact duplicates compaction
drops; ``telemetry_files``, ``telemetry_compacted`` and ``telemetry_sorted_partitions``
list the files. No view built on them changes.

**Retention** (:func:`prune`) removes whole days: a partition ``date=D`` of a stream kept
``N`` days goes once ``D < today - N`` (all of it is older than ``N`` days). The
directory is first renamed to a hidden name (one atomic step: the day disappears whole),
then deleted; a crash in between leaves a hidden directory the next run removes.

One upkeep process at a time per history: both hold ``{data_dir}/.upkeep.lock``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from gridflex.history import (
    COMPACT_PREFIX,
    DUCKDB_TYPES,
    GRID_FREQUENCY,
    SCHEMAS,
    STREAMS,
    TELEMETRY,
    TELEMETRY_SORT_KEY,
    file_metadata,
)

__all__ = [
    "COMPACT_PREFIX",
    "CRASH_ENV",
    "CompactReport",
    "UpkeepBusy",
    "compact",
    "merge_files",
    "prune",
]

log = logging.getLogger(__name__)

#: Test hook: SIGKILL this process at a step of :func:`compact` (``written``: the merged
#: file is fsynced under its hidden name; ``swapped``: renamed in, originals still there;
#: ``removed-one``: one original removed). Never set in production.
CRASH_ENV: Final = "GRIDFLEX_COMPACT_CRASH_AT"
_TMP_PREFIX: Final = ".compact-"
_PRUNED_PREFIX: Final = ".pruned-"
_LOCK_NAME: Final = ".upkeep.lock"
#: Where DuckDB spills while merging a partition larger than memory (hidden, in DIR).
_SPILL: Final = ".upkeep-spill"


class UpkeepBusy(RuntimeError):
    """Another compaction or prune holds the history's upkeep lock."""


@dataclass
class CompactReport:
    """What one :func:`compact` did."""

    partitions: int = 0
    files_in: int = 0
    rows_in: int = 0
    rows_out: int = 0
    merged: list[Path] = field(default_factory=list)
    #: Partitions left as they were because merging them failed (logged).
    failed: list[Path] = field(default_factory=list)


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        log.warning("%s=%s: killing this process", CRASH_ENV, step)
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _upkeep_lock(data_dir: Path) -> Iterator[None]:
    with (data_dir / _LOCK_NAME).open("a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpkeepBusy(f"{data_dir}: another compaction or prune is running") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _partitions(data_dir: Path, stream: str) -> Iterator[tuple[dt.date, Path]]:
    root = data_dir / stream
    if not root.is_dir():
        return
    for path in sorted(root.glob("date=*")):
        try:
            day = dt.date.fromisoformat(path.name.removeprefix("date="))
        except ValueError:
            continue
        if path.is_dir():
            yield day, path


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


#: Rows per batch from DuckDB to the Parquet writer; each batch is one row group.
_BATCH_ROWS: Final = 131_072
#: Columns stored with delta encoding: integers that climb steadily within an asset.
_DELTA_COLUMNS: Final = frozenset({"ts_ms", "seq", "window_start_ms", "issued_ms"})
#: Columns stored byte-stream split: cumulative registers (their low bytes change).
_SPLIT_COLUMNS: Final = frozenset({"energy_import_wh", "energy_export_wh"})


def _writer_options(schema: pa.Schema) -> dict[str, Any]:
    """``pq.ParquetWriter`` options of a merged file (zstd; encodings by column)."""
    names = set(schema.names)
    delta = sorted(_DELTA_COLUMNS & names)
    split = sorted(_SPLIT_COLUMNS & names)
    return {
        "compression": "zstd",
        "use_dictionary": [n for n in schema.names if n not in (*delta, *split)],
        "column_encoding": {
            **dict.fromkeys(delta, "DELTA_BINARY_PACKED"),
            **dict.fromkeys(split, "BYTE_STREAM_SPLIT"),
        },
    }


def merge_files(
    files: Sequence[Path], stream: str, out: Path, *, temp_dir: Path | None = None
) -> tuple[int, int]:
    """Write the rows of ``files`` to ``out`` once each (Parquet, zstd, with its metadata).

    The rows are in ``stream``'s current schema (a column a file lacks is NULL, as the
    views read it), ordered by time (telemetry: by :data:`TELEMETRY_SORT_KEY`, recorded
    as ``gridflex.sorted_by``). DuckDB merges,
    spilling to ``temp_dir`` so a day of telemetry larger than memory merges too, and
    streams the rows to pyarrow's writer, which picks an encoding per column. Returns
    (rows read, rows written); raises ``ValueError`` for a file with a column the stream
    does not have.
    """
    schema = SCHEMAS[stream]
    sources = ", ".join(_sql_str(str(f)) for f in files)
    src = f"read_parquet([{sources}], union_by_name = true, hive_partitioning = false)"
    con = duckdb.connect()
    try:
        if temp_dir is not None:
            con.execute(f"SET temp_directory = {_sql_str(str(temp_dir))}")
        present = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
        extra = present - set(schema.names)
        if extra:
            raise ValueError(
                f"{out.parent}: columns {sorted(extra)} are not in the {stream} schema"
            )
        columns = ", ".join(
            f"CAST({'NULL' if f.name not in present else f.name} AS {DUCKDB_TYPES[f.type]})"
            f" AS {f.name}"
            for f in schema
        )
        ts = "window_start_ms" if stream == GRID_FREQUENCY else "ts_ms"
        # Telemetry by asset, then time: each asset's registers, timestamps and sequence
        # numbers climb steadily, which delta and byte-stream-split encodings store in a
        # few bits (about 4 bytes a reading in all, against 9 in the sink's small files).
        # The full key (boot, seq after time) is the billing window's order, recorded in
        # the metadata: the billing views then read the file in one pass without sorting.
        order = ", ".join(TELEMETRY_SORT_KEY) if stream == TELEMETRY else ts
        reader = con.sql(f"{_merged_rows(stream, columns, src)} ORDER BY {order}").to_arrow_reader(
            _BATCH_ROWS
        )
        sorted_by = {"sorted_by": ",".join(TELEMETRY_SORT_KEY)} if stream == TELEMETRY else {}
        meta = file_metadata(stream, compacted_from=str(len(files)), **sorted_by)
        rows_out = 0
        with pq.ParquetWriter(out, schema.with_metadata(meta), **_writer_options(schema)) as writer:
            for batch in reader:  # DuckDB's Arrow types (string views, ...) cast to ours
                writer.write_table(pa.Table.from_batches([batch]).cast(schema))
                rows_out += batch.num_rows
    finally:
        con.close()
    rows_in = sum(pq.read_metadata(f).num_rows for f in files)
    return rows_in, rows_out


def _merged_rows(stream: str, columns: str, src: str) -> str:
    """The rows a merged file keeps: the distinct rows; for telemetry one row per reading.

    Telemetry is de-duplicated on the ``telemetry`` view's key and rule (the first copy by
    ``ts_ms``; ``register_decreased`` if any copy says so), so that the view reads a
    partition holding only the merged file without de-duplicating it again.
    """
    if stream != TELEMETRY:
        return f"SELECT DISTINCT {columns} FROM {src}"
    names = ", ".join(
        f"bool_or(register_decreased) OVER reading AS {f.name}"
        if f.name == "register_decreased"
        else f.name
        for f in SCHEMAS[stream]
    )
    return (
        f"SELECT {names} FROM (SELECT {columns} FROM {src}) "
        "WINDOW reading AS (PARTITION BY site, asset, boot, seq) "
        "QUALIFY row_number() OVER (PARTITION BY site, asset, boot, seq ORDER BY ts_ms) = 1"
    )


def _write_merged(part: Path, stream: str, files: list[Path]) -> tuple[Path, int, int]:
    """Steps 1-2: the merged file of ``files``, renamed in; returns it and the row counts."""
    token = uuid.uuid4().hex
    tmp = part / f"{_TMP_PREFIX}{token}.tmp"
    final = part / f"{COMPACT_PREFIX}{token}.parquet"
    try:
        rows_in, rows_out = merge_files(files, stream, tmp, temp_dir=part.parent.parent / _SPILL)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if pq.read_metadata(tmp).num_rows != rows_out:
            raise OSError(f"{tmp}: merged file does not read back {rows_out} rows")
        _crash_point("written")
        tmp.rename(final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(part)
    _crash_point("swapped")
    return final, rows_in, rows_out


def _remove(originals: list[Path]) -> None:
    """Step 3: remove the merged originals, then fsync their directories."""
    for i, path in enumerate(originals):
        path.unlink(missing_ok=True)
        if i == 0:
            _crash_point("removed-one")
    for directory in {p.parent for p in originals}:
        _fsync_dir(directory)


def compact(
    data_dir: str | Path,
    *,
    streams: Sequence[str] | None = None,
    before: dt.date | None = None,
    grace_s: float = 2.0,
) -> CompactReport:
    """Merge the files of each closed partition into one (see the module docstring).

    Args:
        data_dir: The history directory.
        streams: Streams to compact (default: all of :data:`gridflex.history.STREAMS`).
        before: Compact the partitions dated before this day; default (and at most) today
            in UTC, which writers are still adding to.
        grace_s: Seconds between renaming the merged files in and removing the originals,
            for queries that listed the originals just before.

    Returns:
        What was merged.

    Raises:
        UpkeepBusy: Another compaction or prune is running on ``data_dir``.
        ValueError: An unknown stream.

    """
    root = Path(data_dir)
    today = dt.datetime.now(dt.UTC).date()
    cutoff = min(before, today) if before is not None else today
    chosen = list(streams) if streams else list(STREAMS)
    for stream in chosen:
        if stream not in SCHEMAS:
            raise ValueError(f"unknown history stream {stream!r}; expected one of {STREAMS}")
    report = CompactReport()
    pending: list[list[Path]] = []
    with _upkeep_lock(root):
        for stream in chosen:
            for day, part in _partitions(root, stream):
                for leftover in part.glob(f"{_TMP_PREFIX}*.tmp"):
                    log.info("removing %s, left by an interrupted compaction", leftover)
                    leftover.unlink(missing_ok=True)
                if day >= cutoff:
                    continue
                files = sorted(part.glob("part-*.parquet"))
                if len(files) < 2:
                    continue
                try:
                    merged, rows_in, rows_out = _write_merged(part, stream, files)
                except (OSError, ValueError, duckdb.Error) as exc:
                    log.error("not compacting %s %s: %s", stream, day.isoformat(), exc)
                    report.failed.append(part)
                    continue
                log.info(
                    "compacted %s %s: %d files, %d rows -> %s, %d rows",
                    stream,
                    day.isoformat(),
                    len(files),
                    rows_in,
                    merged.name,
                    rows_out,
                )
                pending.append(files)
                report.partitions += 1
                report.files_in += len(files)
                report.rows_in += rows_in
                report.rows_out += rows_out
                report.merged.append(merged)
        if pending and grace_s > 0:
            time.sleep(grace_s)
        for files in pending:
            _remove(files)
        shutil.rmtree(root / _SPILL, ignore_errors=True)
    return report


def prune(
    data_dir: str | Path, retention_days: Mapping[str, int], *, today: dt.date | None = None
) -> list[Path]:
    """Remove the partitions older than their stream's retention; return those removed.

    Args:
        data_dir: The history directory.
        retention_days: Days kept per stream; a stream not in it is kept for ever.
        today: The current UTC day (default: now).

    """
    root = Path(data_dir)
    today = today or dt.datetime.now(dt.UTC).date()
    removed: list[Path] = []
    with _upkeep_lock(root):
        for stream, days in retention_days.items():
            stream_dir = root / stream
            if not stream_dir.is_dir():
                continue
            for leftover in stream_dir.glob(f"{_PRUNED_PREFIX}*"):
                log.info("removing %s, left by an interrupted prune", leftover)
                shutil.rmtree(leftover, ignore_errors=True)
            oldest_kept = today - dt.timedelta(days=days)
            for day, part in _partitions(root, stream):
                if day >= oldest_kept:
                    continue
                hidden = stream_dir / f"{_PRUNED_PREFIX}{part.name}-{uuid.uuid4().hex[:8]}"
                part.rename(hidden)
                _fsync_dir(stream_dir)
                shutil.rmtree(hidden)
                log.info(
                    "pruned %s %s (retention %d days, keeping from %s)",
                    stream,
                    day.isoformat(),
                    days,
                    oldest_kept.isoformat(),
                )
                removed.append(part)
    return removed
