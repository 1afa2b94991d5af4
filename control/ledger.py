"""The idempotency ledger: which commands the control writer has handled, in SQLite.

DESIGN.md invariant 1: setpoints are absolute; receiving the same command twice changes
nothing; a command older than the last one applied to an asset is refused as stale. The
ledger remembers every ``command_id`` with the result the writer gave it, and per asset the
last *applied* (or clamped) command, across restarts.

The writer's cycle is ``check`` -> (clamp, write) -> ``record``. ``check`` reads only;
``record`` writes the command and, for ``applied``/``clamped``, the asset's last-applied row
in one transaction. A writer serialises commands per asset (one consumer per asset), so
check-then-record does not race on one asset; should two threads still record the same id,
``record`` keeps the first and tells the second (it returns False).

Order of the checks in :meth:`Ledger.check`, and why:

1. ``duplicate`` first: a redelivery (MQTT QoS 1 is at-least-once) of a command already
   handled must get the *same* answer as the first delivery, whatever has happened since.
   Were ``expired`` or ``stale`` checked first, a late redelivery of a command that *was*
   applied would be acked as refused, and the pipeline would believe the device never took
   it. It also changes nothing, so it is safe to answer from the record alone.
2. ``expired`` before ``stale``: expiry depends on the command and the clock alone, and
   when both hold it is the more useful reason (the command came too late, whatever the
   asset did meanwhile).
3. ``stale``: ``issued_ms`` strictly older than the last command applied to that asset.
   A command with the *same* ``issued_ms`` is not stale (two decisions on one reading).

Durability: WAL mode with ``synchronous=FULL``. WAL lets readers (``check`` on the writer's
event loop, ``last_applied``) go on, on a connection of their own, while a commit waits for
its fsync. With ``NORMAL`` a WAL database stays consistent
but may lose the last transactions on power loss or an OS crash; for this ledger that would
mean forgetting that a command was applied and letting an older one through as not stale
after a reboot, which is exactly what invariant 1 forbids. ``FULL`` costs one fsync per
``record`` (per handled command, not per telemetry reading), which an edge machine's disk
affords at dispatch rates.

Growth is bounded by :meth:`Ledger.prune`, which deletes command ids recorded before a
retention (7 days by default) and keeps every asset's last-applied row. Pruning is safe as
long as the retention is longer than any command's validity: a pruned id that is replayed
is refused as ``expired`` (or ``stale``) instead of ``duplicate``, and never applied twice.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from control.store import open_durable

__all__ = [
    "APPLIED_RESULTS",
    "RETENTION_MS",
    "CommandRecord",
    "Decision",
    "Ledger",
    "Verdict",
]

Verdict = Literal["new", "duplicate", "stale", "expired"]

APPLIED_RESULTS = frozenset({"applied", "clamped"})
"""Results after which the device holds the command's setpoint."""

RETENTION_MS = 7 * 24 * 3600 * 1000
"""How long :meth:`Ledger.prune` keeps command ids by default: 7 days."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS command (
    command_id  TEXT PRIMARY KEY,
    asset       TEXT NOT NULL,
    issued_ms   INTEGER NOT NULL,
    result      TEXT NOT NULL,
    requested_w REAL NOT NULL,
    applied_w   REAL,
    reason      TEXT,
    recorded_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS command_recorded_ms ON command (recorded_ms);
CREATE TABLE IF NOT EXISTS last_applied (
    asset       TEXT PRIMARY KEY,
    command_id  TEXT NOT NULL,
    issued_ms   INTEGER NOT NULL,
    result      TEXT NOT NULL,
    requested_w REAL NOT NULL,
    applied_w   REAL,
    reason      TEXT,
    recorded_ms INTEGER NOT NULL
);
"""

_COLUMNS = "asset, command_id, issued_ms, result, requested_w, applied_w, reason, recorded_ms"
_INSERT_COMMAND = f"INSERT OR IGNORE INTO command ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
#: The asset's last-applied row moves to this command unless it holds a later one.
_UPSERT_LAST = (
    f"INSERT INTO last_applied ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (asset) DO UPDATE SET "
    "command_id = excluded.command_id, issued_ms = excluded.issued_ms, "
    "result = excluded.result, requested_w = excluded.requested_w, "
    "applied_w = excluded.applied_w, reason = excluded.reason, "
    "recorded_ms = excluded.recorded_ms "
    "WHERE excluded.issued_ms >= last_applied.issued_ms"
)


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """What the writer did with one command, as the ledger stored it.

    ``result`` is the ack's result (``applied``, ``clamped``, ``rejected``, ``failed``,
    ``stale``, ``expired``...); ``applied_w`` is the setpoint written, W (None if nothing
    was); ``recorded_ms`` the writer's clock at :meth:`Ledger.record`, epoch ms.
    """

    asset: str
    command_id: str
    issued_ms: int
    result: str
    requested_w: float
    applied_w: float | None
    reason: str | None
    recorded_ms: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The ledger's verdict on a command.

    ``previous`` is, for ``duplicate``, the first delivery's record (answer with its
    result); for ``stale``, the asset's last applied command; otherwise None.
    """

    verdict: Verdict
    previous: CommandRecord | None = None


def _row_to_record(row: tuple[object, ...]) -> CommandRecord:
    asset, command_id, issued_ms, result, requested_w, applied_w, reason, recorded_ms = row
    return CommandRecord(
        asset=str(asset),
        command_id=str(command_id),
        issued_ms=int(issued_ms),  # type: ignore[call-overload]
        result=str(result),
        requested_w=float(requested_w),  # type: ignore[arg-type]
        applied_w=None if applied_w is None else float(applied_w),  # type: ignore[arg-type]
        reason=None if reason is None else str(reason),
        recorded_ms=int(recorded_ms),  # type: ignore[call-overload]
    )


class Ledger:
    """The idempotency ledger in one SQLite file; safe to share between threads.

    One connection per ledger, guarded by a lock (``check_same_thread=False``). A new
    ``Ledger`` on the same file sees everything an earlier one recorded.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        # isolation_level=None: no implicit transactions; record() opens its own.
        self._conn = open_durable(self._path, _SCHEMA)
        # Reads on a connection of their own: in WAL mode a reader never waits for a writer,
        # so check() on the event loop does not wait for record()'s fsync in a worker
        # thread (at a frequency step, a thousand commits in a row). Each read statement
        # sees every transaction committed before it started.
        self._read_lock = threading.Lock()
        self._pending: list[tuple[CommandRecord, asyncio.Future[bool]]] = []
        #: Each asset's last-applied row as read or committed by this ledger (the process
        #: writing the file is the only writer), so check() asks SQLite once per asset.
        self._last: dict[str, CommandRecord | None] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._reader = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        self._reader.execute("PRAGMA busy_timeout=5000")

    def check(
        self,
        asset: str,
        command_id: str,
        issued_ms: int,
        valid_until_ms: int | None,
        now_ms: int,
    ) -> Decision:
        """Decide whether a command is new, a duplicate, expired or stale; changes nothing.

        ``issued_ms``, ``valid_until_ms`` (None = no expiry) and ``now_ms`` are epoch ms.
        The order of the checks is explained in the module docstring.
        """
        with self._read_lock:
            row = self._reader.execute(
                f"SELECT {_COLUMNS} FROM command WHERE command_id = ?", (command_id,)
            ).fetchone()
            if row is not None:
                return Decision("duplicate", _row_to_record(row))
            if valid_until_ms is not None and now_ms > valid_until_ms:
                return Decision("expired")
            last = self._last_applied_locked(asset)
        if last is not None and issued_ms < last.issued_ms:
            return Decision("stale", last)
        return Decision("new")

    def record(
        self,
        asset: str,
        command_id: str,
        *,
        issued_ms: int,
        result: str,
        requested_w: float,
        applied_w: float | None,
        reason: str | None,
        now_ms: int,
    ) -> bool:
        """Record what the writer did with a command, in one transaction.

        For ``applied``/``clamped`` the asset's last-applied row moves to this command,
        unless it already holds a later ``issued_ms`` (so it never goes back). Returns False,
        and changes nothing, when ``command_id`` was already recorded. The arguments after
        ``command_id`` are keyword-only: two watts and two epoch-ms values are too easy to
        swap by position.
        """
        entry = CommandRecord(
            asset, command_id, issued_ms, result, requested_w, applied_w, reason, now_ms
        )
        return self.record_many([entry])[0]

    def _insert(self, rows: Sequence[tuple[object, ...]]) -> list[bool]:
        """Insert the command rows (in a transaction); which ones were new.

        One ``executemany`` when every id is new (the writer checked each before); row by
        row, to tell which, when some were there already.
        """
        before = self._conn.total_changes
        self._conn.executemany(_INSERT_COMMAND, rows)
        if self._conn.total_changes - before == len(rows):
            return [True] * len(rows)
        self._conn.execute("ROLLBACK")
        self._conn.execute("BEGIN IMMEDIATE")
        return [self._conn.execute(_INSERT_COMMAND, row).rowcount == 1 for row in rows]

    def record_many(self, entries: Sequence[CommandRecord]) -> list[bool]:
        """:meth:`record` for several commands in one transaction (one fsync); in order.

        Each entry's ``recorded_ms`` is the writer's clock at the decision (``now_ms``).
        """
        rows = [
            (e.asset, e.command_id, e.issued_ms, e.result, e.requested_w, e.applied_w, e.reason,
             e.recorded_ms)
            for e in entries
        ]  # fmt: skip
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                inserted = self._insert(rows)
                applied = [
                    row for row, new in zip(rows, inserted, strict=True)
                    if new and row[3] in APPLIED_RESULTS
                ]  # fmt: skip
                if applied:
                    self._conn.executemany(_UPSERT_LAST, applied)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        with self._read_lock:  # the cache follows the committed last_applied rows
            for e, new in zip(entries, inserted, strict=True):
                if not new or e.result not in APPLIED_RESULTS or e.asset not in self._last:
                    continue
                held = self._last[e.asset]
                if held is None or e.issued_ms >= held.issued_ms:
                    self._last[e.asset] = e
        return inserted

    async def record_async(self, entry: CommandRecord) -> bool:
        """:meth:`record` from the event loop, committed together with its neighbours.

        Group commit: the entries that arrive while a commit runs (in a worker thread) go
        into the next one, so a burst of a thousand commands costs a few fsyncs, not a
        thousand, and the loop never waits for the disk.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._pending.append((entry, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await asyncio.to_thread(self.record_many, [e for e, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), inserted in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(inserted)

    def last_applied(self, asset: str) -> CommandRecord | None:
        """The last command applied (or clamped) to ``asset``, or None if there was none."""
        with self._read_lock:
            return self._last_applied_locked(asset)

    def _last_applied_locked(self, asset: str) -> CommandRecord | None:
        if asset in self._last:
            return self._last[asset]
        row = self._reader.execute(
            f"SELECT {_COLUMNS} FROM last_applied WHERE asset = ?", (asset,)
        ).fetchone()
        record = None if row is None else _row_to_record(row)
        self._last[asset] = record
        return record

    def prune(self, now_ms: int, retention_ms: int = RETENTION_MS) -> int:
        """Delete command ids recorded before ``now_ms - retention_ms``; returns how many.

        Every asset's last-applied row stays, so staleness survives the pruning.
        """
        with self._lock:
            cursor = self._conn.execute(
                "DELETE FROM command WHERE recorded_ms < ?", (now_ms - retention_ms,)
            )
            return cursor.rowcount

    def close(self) -> None:
        """Close the connections; the file keeps everything recorded."""
        with self._read_lock:
            self._reader.close()
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
