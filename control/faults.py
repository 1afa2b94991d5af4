"""Faults: what counts as one, and the latch that holds it until an operator clears it.

A fault forces the asset to 0 W at once (an emergency stop) and keeps it there, whatever the
commands say, until an operator clears it (``POST /api/v1/assets/{id}/clear-fault`` or
``gridflex control clear-fault``). Clearing does not make a fault go away: when the device
still reports it, the next reading latches it again.

Where faults come from (:func:`faults_in_telemetry`, :func:`faults_in_status`, pure):

- a reading whose ``status`` is ``fault`` (SunSpec 701 ``InvSt`` FAULT, an OCPP connector
  Faulted): the code is the device's own word (``device_status``), else ``fault``;
- an asset status with fault codes (OCPP ``techCode``s such as ground fault ``Error 0x04``
  or ``Grid_Sync_Error``, transaction stop reasons such as ``GroundFault``, SunSpec 701
  alarms), or in the state ``faulted``;
- a lost device: the device said nothing ``lost_after_failures`` times in a row (its
  status is ``offline`` with ``consecutive_failures`` at least that: the connection refused,
  reset or timed out, no byte in reply within the Modbus timeout), code ``lost device``.

A device that answers garbage is misbehaving, not lost, and latches nothing: its status is
``error`` (a Modbus exception, a reply that does not parse, another transaction's frame; see
``collectors.modbus.poller.classify_failure``), the collector retries it with back-off, and
each command to it is acked ``failed`` (the writer's own connection fails the same way)
until it answers properly, when the next command is ``applied``. Why not latch it too: the
latch is an emergency stop that waits for an operator. It is for what makes a device unsafe
to drive (a ground fault, a lost grid sync) or leaves it out of reach for good (nothing
comes back); a garbled link (a noisy serial gateway, a flaky switch, a fuzzing campaign)
heals by itself, and latching it turned every inverter of the campaign into a stopped one
until someone cleared it by hand (``bench/fuzz.py``, issue 9). The commands' ``failed``
acks, the ``error`` status and the collector's ``gridflex_modbus_device_failures_total``
say what is going on meanwhile.

:class:`FaultLatch` keeps the latched faults in SQLite (WAL, ``synchronous=FULL``, in the
ledger's file by default), so a restart of the writer does not forget a fault nobody
cleared.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from control.store import open_durable
from gridflex.contract import AssetStatus

__all__ = [
    "LOST_DEVICE",
    "FaultLatch",
    "LatchedFault",
    "faults_in_status",
    "faults_in_telemetry",
]

#: The fault code of a device the collector cannot reach any more.
LOST_DEVICE = "lost device"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fault (
    asset     TEXT NOT NULL,
    code      TEXT NOT NULL,
    source    TEXT NOT NULL,
    detail    TEXT,
    since_ms  INTEGER NOT NULL,
    PRIMARY KEY (asset, code)
);
"""


def faults_in_telemetry(status: str | None, device_status: str | None) -> list[str]:
    """The fault codes a reading shows: ``[device_status or "fault"]`` when faulted."""
    if status != "fault":
        return []
    return [device_status or "fault"]


def faults_in_status(status: AssetStatus, *, lost_after_failures: int) -> list[str]:
    """The fault codes an asset status shows (see the module docstring)."""
    codes = list(dict.fromkeys(status.faults))
    if status.state == "faulted" and not codes:
        codes.append("faulted")
    if status.state == "offline" and status.consecutive_failures >= lost_after_failures:
        codes.append(LOST_DEVICE)  # silent that often in a row; garbage ("error") is not
    return codes


@dataclass(frozen=True, slots=True)
class LatchedFault:
    """One latched fault: its code, where it was seen, the detail, since when (epoch ms)."""

    asset: str
    code: str
    source: str
    detail: str | None
    since_ms: int

    def describe(self) -> str:
        """``code (detail)``, the text that goes into acks and logs."""
        return f"{self.code} ({self.detail})" if self.detail else self.code


class FaultLatch:
    """Latched faults per asset in SQLite; safe to share between threads.

    Reads are served from memory (every command asks), writes go to the file first.
    """

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._conn = open_durable(Path(path), _SCHEMA)
        self._latched: dict[str, dict[str, LatchedFault]] = {}
        for asset, code, source, detail, since_ms in self._conn.execute(
            "SELECT asset, code, source, detail, since_ms FROM fault ORDER BY since_ms"
        ):
            fault = LatchedFault(asset, code, source, detail, int(since_ms))
            self._latched.setdefault(asset, {})[code] = fault

    def latch(
        self, asset: str, codes: list[str], *, source: str, detail: str | None, now_ms: int
    ) -> list[LatchedFault]:
        """Latch ``codes`` for ``asset``; returns those that were not latched yet."""
        with self._lock:
            held = self._latched.setdefault(asset, {})
            new = [
                LatchedFault(asset, code, source, detail, now_ms)
                for code in dict.fromkeys(codes)
                if code not in held
            ]
            if not new:
                return []
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR IGNORE INTO fault (asset, code, source, detail, since_ms) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(f.asset, f.code, f.source, f.detail, f.since_ms) for f in new],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            for fault in new:
                held[fault.code] = fault
            return new

    def latched(self, asset: str) -> list[LatchedFault]:
        """The faults latched for ``asset``, oldest first."""
        with self._lock:
            return list(self._latched.get(asset, {}).values())

    def describe(self, asset: str) -> str | None:
        """The latched faults as one text (``code (detail); ...``), None when there are none."""
        faults = self.latched(asset)
        return "; ".join(f.describe() for f in faults) if faults else None

    def clear(self, asset: str) -> list[LatchedFault]:
        """Clear every latched fault of ``asset``; returns what was cleared."""
        with self._lock:
            cleared = list(self._latched.pop(asset, {}).values())
            if cleared:
                self._conn.execute("DELETE FROM fault WHERE asset = ?", (asset,))
            return cleared

    def close(self) -> None:
        """Close the connection; the file keeps what is latched."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> FaultLatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
