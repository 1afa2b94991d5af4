"""A write-ahead log of received MQTT messages: what the pipeline acknowledges is on disk.

The pipeline's receiver acknowledges a QoS 1 message to the broker (PUBACK) only once the
message is in this log, appended and fsynced (group commit: one ``write`` + ``fsync`` for
every message that arrived while the previous fsync ran, see :class:`GroupCommitter`). On
start the source replays the log into the dataflow (:func:`replay`) before it receives
anything new; the history sink's ``(asset, boot, seq)`` de-duplication and the history
views make a replayed reading count once.

Layout: one directory per receiver; segment files ``{number:012d}.wal``, a new one per run
and every ``segment_s``. A record is ``length (u32) | crc32 (u32) | body`` with ``body =
received_ms (u64) | topic length (u16) | topic | payload``, little endian. Reading stops at
the first record that is short or fails its CRC (a torn write at a crash): what follows it
was never acknowledged.

Truncation ("covered" rule): a sealed segment is deleted once ``retention_s`` has passed
since it was sealed *and* since this run started. The pipeline sets ``retention_s`` to
``history flush_interval_s + 2 x snapshot_interval_s + 5 s``: by then every row of the
segment has left the history sink's buffer for a Parquet file, and the Bytewax epoch that
held it has been snapshotted (the last complete snapshot is at most two intervals old).
Segments replayed at start get the same grace, counted from the start.
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from zlib import crc32

__all__ = [
    "GroupCommitter",
    "WriteAheadLog",
    "decode_records",
    "encode_record",
    "replay",
]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_BODY = struct.Struct("<QH")
_SUFFIX = ".wal"
#: Longest record accepted when reading (guards against a corrupt length field).
MAX_RECORD_BYTES = 16 * 1024 * 1024

#: ``(topic, payload, received_ms)``, as :data:`pipelines.mqtt_receiver.Message`.
Record = tuple[str, bytes, int]


def encode_record(topic: str, payload: bytes, received_ms: int) -> bytes:
    """One log record: header (length, CRC32 of the body) and body."""
    topic_b = topic.encode()
    body = _BODY.pack(received_ms, len(topic_b)) + topic_b + payload
    return _HEADER.pack(len(body), crc32(body)) + body


def decode_records(data: bytes) -> tuple[list[Record], int]:
    """Decode records from the start of ``data``; return them and the bytes consumed.

    Stops at the first incomplete record or failed CRC (a torn tail): ``consumed`` is then
    less than ``len(data)``.
    """
    records: list[Record] = []
    pos = 0
    end = len(data)
    while pos + _HEADER.size <= end:
        length, checksum = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        if length < _BODY.size or length > MAX_RECORD_BYTES or start + length > end:
            break
        body = data[start : start + length]
        if crc32(body) != checksum:
            break
        received_ms, topic_len = _BODY.unpack_from(body)
        topic_end = _BODY.size + topic_len
        if topic_end > length:
            break
        topic = body[_BODY.size : topic_end].decode("utf-8", "replace")
        records.append((topic, body[topic_end:], received_ms))
        pos = start + length
    return records, pos


def _segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{_SUFFIX}"))


def replay(directory: Path) -> Iterator[Record]:
    """Every intact record in ``directory``'s segments, oldest first (none if it is absent)."""
    if not directory.is_dir():
        return
    for path in _segments(directory):
        data = path.read_bytes()
        records, consumed = decode_records(data)
        if consumed < len(data):
            log.warning(
                "WAL %s: %d bytes after record %d unreadable (torn write at a crash); ignored",
                path,
                len(data) - consumed,
                len(records),
            )
        yield from records


class WriteAheadLog:
    """Segments of appended, fsynced records in one directory (see the module docstring).

    Args:
        directory: Where the segments live (created).
        retention_s: Age after which a sealed segment is deleted (the "covered" rule).
        segment_s: A new segment is started once the current one is this old.
        clock: Monotonic seconds (injected by tests).

    """

    def __init__(
        self,
        directory: Path,
        *,
        retention_s: float,
        segment_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.retention_s = retention_s
        self.segment_s = segment_s
        self._clock = clock
        self._started = clock()
        existing = _segments(self.directory)
        #: Sealed segments and when they count as sealed (no earlier than this run's start).
        self._sealed: list[tuple[Path, float]] = [(p, self._started) for p in existing]
        self._number = int(existing[-1].stem) + 1 if existing else 0
        self._fd = -1
        self._path = self.directory
        self._opened = 0.0
        self.records = 0
        self.fsyncs = 0
        self.deleted = 0
        self._open()

    def _open(self) -> None:
        self._path = self.directory / f"{self._number:012d}{_SUFFIX}"
        self._number += 1
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _fsync_dir(self.directory)
        self._opened = self._clock()

    def append(self, data: bytes, count: int) -> None:
        """Append ``count`` encoded records in one write and one fsync; then housekeeping."""
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.records += count
        self.fsyncs += 1
        self.maintain()

    def maintain(self) -> None:
        """Start a new segment when the current one is old; delete covered sealed ones."""
        now = self._clock()
        if now - self._opened >= self.segment_s:
            os.close(self._fd)
            self._sealed.append((self._path, now))
            self._open()
        while self._sealed and now - self._sealed[0][1] >= self.retention_s:
            path, _ = self._sealed.pop(0)
            path.unlink(missing_ok=True)
            self.deleted += 1
            log.debug("WAL %s deleted (covered by history and snapshot)", path)

    def close(self) -> None:
        """Close the current segment (it stays until covered, and is replayed on start)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class GroupCommitter:
    """A thread that makes batches durable, then runs each batch's ``done`` callback.

    :meth:`submit` hands over ``(data, count, done)``; the thread takes every batch waiting
    at that moment, appends them in one write and one fsync, then calls each ``done`` in
    order (the receiver's: "send the PUBACKs of these messages"). A batch submitted while
    an fsync runs waits for the next one: the group grows with the load.
    """

    def __init__(self, wal: WriteAheadLog, *, maintain_s: float = 0.5) -> None:
        self.wal = wal
        self._queue: queue.SimpleQueue[tuple[bytes, int, Callable[[], None]] | None] = (
            queue.SimpleQueue()
        )
        self._maintain_s = maintain_s
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="wal-commit", daemon=True)
        self._thread.start()

    def submit(self, data: bytes, count: int, done: Callable[[], None]) -> None:
        """Queue a batch of encoded records; ``done`` runs once they are fsynced."""
        self._queue.put((data, count, done))

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self._maintain_s)
                except queue.Empty:
                    self.wal.maintain()
                    continue
                if item is None:
                    return
                group = [item]
                stop = False
                while True:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    group.append(more)
                self.wal.append(b"".join(g[0] for g in group), sum(g[1] for g in group))
                for _, _, done in group:
                    done()
                if stop:
                    return
        except BaseException as exc:  # nothing more is acknowledged; the broker keeps it
            log.exception("WAL %s: write failed; acknowledgements stop", self.wal.directory)
            self.error = exc

    def close(self, timeout_s: float = 10.0) -> None:
        """Commit what was submitted, stop the thread, close the log."""
        self._queue.put(None)
        self._thread.join(timeout_s)
        self.wal.close()
