"""Charging sessions from OCPP ``TransactionEvent``: what the CSMS publishes as ``session/1``.

:class:`TransactionLog` follows each EVSE's transaction through its ``Started``,
``Updated`` and ``Ended`` events and returns a :class:`~gridflex.contract.ChargingSession`
when one starts and when it ends: the start and end times (the events' timestamps), the
energy registers and SoC at the first and last meter values that carried them, the id
token's SHA-256 (``gridflex.contract.hash_id_token``; the token itself is never kept) and
the stop reason. Pure bookkeeping: publishing is the CSMS's (``publish_transaction``).

A transaction first seen from its middle (the CSMS restarted) starts at that event; one
whose ``Ended`` never came (the station lost it) is dropped, logged, when the EVSE starts
another: its end is not made up. The CSMS's memory is not persistent: the history's
``transactions`` view joins what it got.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from collectors.ocpp.mapping import parse_ocpp_time, read_meter_value
from gridflex.contract import ChargingSession, SessionEvent, hash_id_token

__all__ = ["OpenTransaction", "TransactionLog"]

log = logging.getLogger(__name__)


@dataclass
class OpenTransaction:
    """What is known of one running transaction."""

    transaction_id: str
    start_ms: int
    meter_start_wh: float | None = None
    export_start_wh: float | None = None
    soc_start_pct: float | None = None
    meter_last_wh: float | None = None
    export_last_wh: float | None = None
    soc_last_pct: float | None = None
    id_token_hash: str | None = None

    def take_meter_values(self, meter_values: Any) -> None:
        """Keep the registers and SoC of the event's meter values (first and last)."""
        for meter_value in meter_values or ():
            try:
                reading = read_meter_value(meter_value)
            except (ValueError, KeyError, TypeError):
                continue  # the telemetry path reports unusable meter values
            if reading.energy_import_wh is not None:
                if self.meter_start_wh is None:
                    self.meter_start_wh = reading.energy_import_wh
                self.meter_last_wh = reading.energy_import_wh
            if reading.energy_export_wh is not None:
                if self.export_start_wh is None:
                    self.export_start_wh = reading.energy_export_wh
                self.export_last_wh = reading.energy_export_wh
            if reading.soc_pct is not None:
                if self.soc_start_pct is None:
                    self.soc_start_pct = reading.soc_pct
                self.soc_last_pct = reading.soc_pct


def _token_hash(payload: Mapping[str, Any]) -> str | None:
    token = payload.get("idToken")
    if not isinstance(token, Mapping) or not token.get("idToken"):
        return None
    return hash_id_token(str(token["idToken"]), token.get("type"))


class TransactionLog:
    """The running transaction of each asset (EVSE), fed ``TransactionEvent`` payloads."""

    def __init__(self, site: str) -> None:
        self.site = site
        self._open: dict[str, OpenTransaction] = {}

    def running(self, asset: str) -> OpenTransaction | None:
        """The asset's running transaction, if any."""
        return self._open.get(asset)

    def on_event(
        self, asset: str, payload: Mapping[str, Any], *, now_ms: int
    ) -> list[ChargingSession]:
        """Follow one ``TransactionEvent`` of ``asset``; return the sessions to publish.

        Raises ``ValueError`` for an unreadable ``timestamp`` (the schema check lets
        through only RFC 3339 date-times, so hardly ever).
        """
        tx_id = str(payload["transactionInfo"]["transactionId"])
        event_ms = parse_ocpp_time(payload["timestamp"])
        out: list[ChargingSession] = []
        tx = self._open.get(asset)
        if tx is not None and tx.transaction_id != tx_id:
            log.warning(
                "%s: transaction %s started while %s had not ended; its end is unknown",
                asset,
                tx_id,
                tx.transaction_id,
            )
            tx = None
        started = tx is None
        if tx is None:
            tx = self._open[asset] = OpenTransaction(tx_id, event_ms)
        tx.take_meter_values(payload.get("meterValue"))
        tx.id_token_hash = _token_hash(payload) or tx.id_token_hash
        ended = payload["eventType"] == "Ended"
        if ended:
            del self._open[asset]
            reason = payload["transactionInfo"].get("stoppedReason")
            out.append(
                self._session(asset, tx, "ended", now_ms=now_ms, end_ms=event_ms, reason=reason)
            )
        elif started:
            out.append(self._session(asset, tx, "started", now_ms=now_ms, end_ms=None, reason=None))
        return out

    def _session(
        self,
        asset: str,
        tx: OpenTransaction,
        event: SessionEvent,
        *,
        now_ms: int,
        end_ms: int | None,
        reason: str | None,
    ) -> ChargingSession:
        ended = event == "ended"
        return ChargingSession(
            site=self.site,
            asset=asset,
            ts_ms=now_ms,
            event=event,
            transaction_id=tx.transaction_id,
            start_ms=tx.start_ms,
            end_ms=end_ms,
            meter_start_wh=tx.meter_start_wh,
            meter_stop_wh=tx.meter_last_wh if ended else None,
            export_start_wh=tx.export_start_wh,
            export_stop_wh=tx.export_last_wh if ended else None,
            soc_start_pct=tx.soc_start_pct,
            soc_end_pct=tx.soc_last_pct if ended else None,
            id_token_hash=tx.id_token_hash,
            stopped_reason=reason,
        )
