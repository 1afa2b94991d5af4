"""Faults and other notable events: logged with their fault code and kept in the history.

The standard fault codes of an EV/V2G gateway (:data:`STANDARD_FAULT_CODES`):
``ISO_V2G_MSG_TIMEOUT`` (ISO 15118 message timeout), ``Grid_Sync_Error`` (the inverter
lost grid synchronisation), ``0x04`` (ground fault, OCPP ``techCode`` "Error 0x04" or stop
reason ``GroundFault``) and ``Max Capacity Reached`` (the site's import/export limit
refused a command). :func:`fault_code` maps a device's own spelling onto them; any other
code is kept as the device wrote it.

:func:`report` is what a detection point calls: it logs one line carrying ``asset``,
``event`` and ``fault_code`` (``extra=``, shown by ``--log-format json``) and appends a row
to the ``events`` history stream (:data:`gridflex.history.EVENTS`) when the process has
an :class:`EventLog` (:func:`configure`, once at start-up). The rows are written by a
background thread, one Parquet file per flush, under a temporary name renamed into place,
so ``gridflex query "select * from events"`` finds them. A repeat of the same ``(asset,
event, fault_code)`` within ``repeat_s`` is neither logged at the event's level nor
recorded again (a refused command is refused at every refresh).
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from gridflex.history import EVENTS, EVENTS_SCHEMA, file_metadata, partition_dir, utc_date

__all__ = [
    "GRID_SYNC_ERROR",
    "GROUND_FAULT",
    "ISO_V2G_MSG_TIMEOUT",
    "MAX_CAPACITY_REACHED",
    "STANDARD_FAULT_CODES",
    "EventLog",
    "configure",
    "fault_code",
    "report",
]

log = logging.getLogger(__name__)

ISO_V2G_MSG_TIMEOUT: Final = "ISO_V2G_MSG_TIMEOUT"
GRID_SYNC_ERROR: Final = "Grid_Sync_Error"
GROUND_FAULT: Final = "0x04"
MAX_CAPACITY_REACHED: Final = "Max Capacity Reached"
STANDARD_FAULT_CODES: Final = (
    ISO_V2G_MSG_TIMEOUT,
    GRID_SYNC_ERROR,
    GROUND_FAULT,
    MAX_CAPACITY_REACHED,
)

#: Spellings (lower case, without spaces, underscores and dashes) of the standard codes.
_ALIASES: Final = {
    "isov2gmsgtimeout": ISO_V2G_MSG_TIMEOUT,
    "v2gmsgtimeout": ISO_V2G_MSG_TIMEOUT,
    "gridsyncerror": GRID_SYNC_ERROR,
    "0x04": GROUND_FAULT,
    "error0x04": GROUND_FAULT,
    "groundfault": GROUND_FAULT,
    "maxcapacityreached": MAX_CAPACITY_REACHED,
}


def fault_code(code: str) -> str:
    """The standard name of ``code`` when it is one of them, else ``code`` as written."""
    key = "".join(c for c in code.lower() if c not in " _-")
    return _ALIASES.get(key, code)


def _write_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` under a hidden name, fsync, rename into place (readers see whole files)."""
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


class EventLog:
    """Appends rows to the ``events`` stream of one history, from a background thread.

    Args:
        data_dir: The history folder (``[history] dir``).
        site: The site id of every row.
        component: Who records (``control``, ``collect-ocpp``), part of each row and file name.
        flush_s: Rows wait at most this long before they are written.
        repeat_s: A repeat of the same ``(asset, event, fault_code)`` within this is dropped.

    """

    def __init__(
        self,
        data_dir: str | Path,
        site: str,
        component: str,
        *,
        flush_s: float = 1.0,
        repeat_s: float = 60.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.site = site
        self.component = component
        self.flush_s = flush_s
        self.repeat_ms = round(repeat_s * 1000)
        self._rows: list[dict[str, Any]] = []
        self._last: dict[tuple[str | None, str, str | None], int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._token = uuid.uuid4().hex[:8]
        self._counter = 0
        self.written = 0
        self._thread = threading.Thread(target=self._loop, name="events-writer", daemon=True)
        self._thread.start()

    def fresh(self, asset: str | None, event: str, code: str | None, ts_ms: int) -> bool:
        """Whether this event is new (not a repeat within ``repeat_s``); remembers it."""
        key = (asset, event, code)
        with self._lock:
            last = self._last.get(key)
            if last is not None and 0 <= ts_ms - last < self.repeat_ms:
                return False
            self._last[key] = ts_ms
            return True

    def record(
        self,
        asset: str | None,
        event: str,
        *,
        code: str | None = None,
        detail: str | None = None,
        ts_ms: int | None = None,
    ) -> None:
        """Queue one row (written within ``flush_s``)."""
        row = {
            "site": self.site,
            "asset": asset,
            "ts_ms": ts_ms if ts_ms is not None else time.time_ns() // 1_000_000,
            "component": self.component,
            "event": event,
            "fault_code": code,
            "detail": detail,
        }
        with self._lock:
            self._rows.append(row)
        self._wake.set()

    def flush(self) -> None:
        """Write what is queued now (one file per UTC day of the rows)."""
        with self._lock:
            rows, self._rows = self._rows, []
        by_day: dict[dt.date, list[dict[str, Any]]] = {}
        for row in rows:
            by_day.setdefault(utc_date(row["ts_ms"]), []).append(row)
        for day, day_rows in by_day.items():
            self._counter += 1
            name = f"part-{self.component}-{self._token}-{self._counter:06d}.parquet"
            path = partition_dir(self.data_dir, EVENTS, day) / name
            try:
                schema = EVENTS_SCHEMA.with_metadata(file_metadata(EVENTS))
                _write_atomic(pa.Table.from_pylist(day_rows, schema=schema), path)
            except OSError as exc:
                log.error("events: cannot write %d rows to %s: %s", len(day_rows), path, exc)
                continue
            self.written += len(day_rows)

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait()
            if self._closed:
                break
            time.sleep(self.flush_s)  # gather what comes with it
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        self._closed = True
        self._wake.set()
        self._thread.join(5.0)
        self.flush()


_current: EventLog | None = None


def configure(data_dir: str | Path | None, site: str, component: str) -> EventLog | None:
    """Give this process an :class:`EventLog` (None ``data_dir``: log only); returns it."""
    global _current
    if _current is not None:
        _current.close()
    _current = None if data_dir is None else EventLog(data_dir, site, component)
    if _current is not None:
        atexit.register(_current.close)  # what is queued is written on the way out
    return _current


def report(
    logger: logging.Logger,
    asset: str | None,
    code: str,
    message: str,
    *args: object,
    event: str = "fault",
    level: int = logging.ERROR,
    detail: str | None = None,
    ts_ms: int | None = None,
) -> str:
    """Log ``message % (*args, fault_code)`` with ``asset``/``event``/``fault_code``; record it.

    ``code`` is mapped by :func:`fault_code` and is the message's last argument
    (``report(log, "inv1", "Error 0x04", "%s: fault latched: %s", "inv1")``). A repeat
    within the event log's ``repeat_s`` is logged at DEBUG only and not recorded.

    Returns:
        The fault code as recorded.

    """
    standard = fault_code(code)
    when = ts_ms if ts_ms is not None else time.time_ns() // 1_000_000
    events = _current
    if events is not None and not events.fresh(asset, event, standard, when):
        level = logging.DEBUG
    elif events is not None:
        events.record(asset, event, code=standard, detail=detail or code, ts_ms=when)
    extra = {"asset": asset, "event": event, "fault_code": standard}
    logger.log(level, message, *args, standard, extra=extra)
    return standard
