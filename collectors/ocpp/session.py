"""One station's OCPP conversation: its state per EVSE and the handlers that change it.

``StationState`` is what the CSMS knows of a station's connection (version, boot, sampling);
``EvseState`` what it knows of each EVSE (OCPP 2.x keeps transactions, meter values,
connector status and the car's needs per ``evseId``), each EVSE being one asset of the
site. ``StationSession`` is the station's WebSocket connection: OCPP handlers over that
state that hand meter values and status changes to the CSMS (``collectors.ocpp.csms``)
for publishing. Everything runs on the CSMS's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ocpp.exceptions import OCPPError
from ocpp.routing import after, on
from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from collectors.ocpp.mapping import charging_needs, format_ocpp_time
from collectors.ocpp.rpc import RpcChargePoint
from collectors.ocpp.settings import EvseConfig, StationConfig, sampling_variables
from collectors.ocpp.telemetry import TelemetryEncoder
from gridflex import events
from gridflex.contract import EvChargingNeeds

if TYPE_CHECKING:
    from collectors.ocpp.csms import Csms

__all__ = [
    "FAULT_REASONS",
    "SESSION_CLASSES",
    "EvseState",
    "MeasuredPower",
    "StationSession",
    "StationState",
]

log = logging.getLogger(__name__)

#: Transaction stop reasons that are faults of the station (OCPP ``ReasonEnumType``).
FAULT_REASONS = frozenset({"GroundFault", "OvercurrentFault", "EmergencyStop", "PowerQuality"})


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class MeasuredPower:
    """The power of one published meter value, W (+ charge), its time and frame number."""

    frame_no: int
    power_w: float
    ts_ms: int


@dataclass
class EvseState:
    """What the CSMS knows about one EVSE (one asset); changed only on the event loop."""

    config: EvseConfig
    station: StationState = field(repr=False)
    connector_status: str | None = None
    charging_state: str | None = None
    transaction_id: str | None = None
    last_tx_seq_no: int | None = None
    needs: EvChargingNeeds | None = None
    faults: set[str] = field(default_factory=set)
    last_power_w: float | None = None
    temp_c: float | None = None
    seq: int = 0
    encoder: TelemetryEncoder | None = field(default=None, repr=False)
    #: The last few published powers, for the read-back after a charging profile.
    recent: deque[MeasuredPower] = field(default_factory=lambda: deque(maxlen=4), repr=False)
    #: Read-backs waiting for a meter value after frame ``n``: ``(n, future)``.
    waiters: list[tuple[int, asyncio.Future[MeasuredPower]]] = field(
        default_factory=list, repr=False
    )

    @property
    def asset_id(self) -> str:
        """The asset this EVSE publishes as."""
        return self.config.asset_id

    @property
    def connector_faulted(self) -> bool:
        """Whether the connector reported Faulted (StatusNotification)."""
        return self.connector_status == "Faulted"

    @property
    def faulted(self) -> bool:
        """Whether the connector is Faulted or a fault code is active."""
        return self.connector_faulted or bool(self.faults)

    def measured(self, reading: MeasuredPower) -> None:
        """Keep a published power and hand it to the read-backs waiting for it."""
        self.recent.append(reading)
        if not self.waiters:
            return
        still = []
        for after_frame, future in self.waiters:
            if future.done():
                continue
            if reading.frame_no > after_frame:
                future.set_result(reading)
            else:
                still.append((after_frame, future))
        self.waiters = still

    def power_after(self, frame_no: int) -> asyncio.Future[MeasuredPower]:
        """A future for the first published power of a frame after ``frame_no``."""
        future: asyncio.Future[MeasuredPower] = asyncio.get_running_loop().create_future()
        for reading in self.recent:
            if reading.frame_no > frame_no:
                future.set_result(reading)
                return future
        self.waiters.append((frame_no, future))
        return future


@dataclass
class StationState:
    """What the CSMS knows about one station's connection; its EVSEs in ``evses``."""

    config: StationConfig
    ocpp_version: Literal["2.0.1", "2.1"] | None = None
    connected: bool = False
    booted: bool = False
    station_info: dict[str, Any] = field(default_factory=dict)
    meter_interval_s: float | None = None
    evses: dict[int, EvseState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.evses:
            self.evses = {e.evse_id: EvseState(e, self) for e in self.config.evses}

    def evse_of_transaction(self, transaction_id: str) -> EvseState | None:
        """The EVSE running ``transaction_id``, if any."""
        for evse in self.evses.values():
            if evse.transaction_id == transaction_id:
                return evse
        return None

    # Single-EVSE shortcuts (the first EVSE), for callers that know a station has one.

    @property
    def transaction_id(self) -> str | None:
        """The transaction of the station's first EVSE."""
        return self._first.transaction_id

    @property
    def needs(self) -> EvChargingNeeds | None:
        """The car's needs on the station's first EVSE."""
        return self._first.needs

    @property
    def _first(self) -> EvseState:
        return self.evses[min(self.evses)]


class StationSession(RpcChargePoint):
    """One station's WebSocket connection: OCPP handlers over the shared ``StationState``."""

    _ocpp_version: str

    def __init__(self, csms: Csms, state: StationState, connection: ServerConnection) -> None:
        super().__init__(
            state.config.station_id,
            connection,
            validators=csms.validators,
            response_timeout_s=csms.settings.response_timeout_s,
            on_bad_input=lambda reason, raw: csms.bad_input(self.id, reason, raw),
            frames=csms.frames,
            on_call_error=csms.count_call_error,
        )
        self.csms = csms
        self.state = state

    def _evse(self, evse_id: int | None, what: str, payload: object) -> EvseState | None:
        """The EVSE ``evse_id`` of this station; None (logged, dead-lettered) if unknown."""
        evse = self.state.evses.get(evse_id) if evse_id is not None else None
        if evse is None:
            self.csms.bad_input(
                self.id, f"{what} for EVSE {evse_id}, not in the site file", str(payload)
            )
        return evse

    # -- provisioning

    @on("BootNotification")
    def on_boot_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Accept the station and tell it the heartbeat interval."""
        self.state.booted = True
        self.state.station_info = dict(payload.get("chargingStation", {}))
        log.info(
            "%s booted (OCPP %s, %s %s, reason %s)",
            self.id,
            self._ocpp_version,
            self.state.station_info.get("vendorName"),
            self.state.station_info.get("model"),
            payload.get("reason"),
        )
        self.csms.publish_station_status(self.state, "booted")
        return {
            "currentTime": format_ocpp_time(_now_ms()),
            "interval": self.csms.settings.heartbeat_interval_s,
            "status": "Accepted",
        }

    @after("BootNotification")
    async def after_boot_notification(self, _payload: dict[str, Any]) -> None:
        """Set the meter-value sampling, then the station-wide limit, after the answer."""
        await self.configure_sampling()
        await self.csms.send_station_max(self)

    async def configure_sampling(self) -> None:
        """SetVariables for the meter-value interval and measurands (``sampling_variables``)."""
        interval_s = float(self.csms.settings.meter_interval_s)
        for whole_seconds in (False, True):
            entries = sampling_variables(interval_s, whole_seconds=whole_seconds)
            try:
                answer = await self.call_payload("SetVariables", {"setVariableData": entries})
            except (TimeoutError, OCPPError, ConnectionClosed) as exc:
                log.warning("%s: SetVariables for meter values failed: %r", self.id, exc)
                return
            statuses = {
                f"{r['component']['name']}.{r['variable']['name']}": r["attributeStatus"]
                for r in answer.get("setVariableResult", [])
            }
            interval_status = statuses.get("SampledDataCtrlr.TxUpdatedInterval")
            if interval_status == "Accepted":
                self.state.meter_interval_s = float(entries[0]["attributeValue"])
                break
            if whole_seconds or interval_s.is_integer():
                log.warning("%s: station refused the meter interval: %s", self.id, statuses)
                return
        log.info("%s: meter values every %s s", self.id, self.state.meter_interval_s)

    @on("Heartbeat")
    def on_heartbeat(self, _payload: dict[str, Any]) -> dict[str, Any]:
        """Answer with the CSMS time (RFC 3339, ``Z``)."""
        return {"currentTime": format_ocpp_time(_now_ms())}

    @on("NotifyReport")
    def on_notify_report(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Acknowledge a device-model report (logged; not stored)."""
        log.debug(
            "%s: NotifyReport request %s part %s with %d entries",
            self.id,
            payload.get("requestId"),
            payload.get("seqNo"),
            len(payload.get("reportData", [])),
        )
        return {}

    @on("Authorize")
    def on_authorize(self, _payload: dict[str, Any]) -> dict[str, Any]:
        """Accept every id token (authorization is outside gridflex's scope)."""
        return {"idTokenInfo": {"status": "Accepted"}}

    # -- availability and faults

    @on("StatusNotification")
    def on_status_notification(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Track the EVSE's connector status; leaving Faulted clears its fault codes."""
        evse = self._evse(payload["evseId"], "StatusNotification", payload)
        if evse is None:
            return {}
        status = payload["connectorStatus"]
        was_faulted = evse.connector_faulted
        evse.connector_status = status
        if was_faulted and status != "Faulted":
            evse.faults.clear()
        elif status == "Faulted" and not was_faulted:
            msg = "%s: connector Faulted (StatusNotification): %s"
            events.report(log, evse.asset_id, "ConnectorFaulted", msg, evse.asset_id)
        self.csms.publish_status(evse, f"connector {status}")
        return {}

    @on("NotifyEvent")
    def on_notify_event(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Collect fault codes (``techCode``, ``Problem`` events) and connector temperatures.

        An event whose component names an EVSE concerns that EVSE; one without concerns
        every EVSE of the station.
        """
        changed: set[int] = set()
        for event in payload.get("eventData", []):
            component = event.get("component", {})
            evse_id = component.get("evse", {}).get("id")
            targets = list(self.state.evses.values())
            if evse_id is not None:
                targets = [e for e in targets if e.config.evse_id == evse_id]
            variable = event.get("variable", {}).get("name")
            code = event.get("techCode")
            if variable == "Temperature" and code is None:
                try:
                    temp_c = float(event["actualValue"])
                except ValueError:
                    self.csms.bad_input(self.id, "temperature is not a number", str(event))
                    continue
                for evse in targets:
                    evse.temp_c = temp_c
                continue
            if variable != "Problem" and code is None:
                continue
            code = code or f"{component.get('name', '?')}.Problem"
            cleared = event.get("cleared") or event.get("actualValue") == "false"
            for evse in targets:
                if cleared and code in evse.faults:
                    evse.faults.discard(code)
                    changed.add(evse.config.evse_id)
                elif not cleared and code not in evse.faults:
                    evse.faults.add(code)
                    changed.add(evse.config.evse_id)
                    msg = "%s: fault code (NotifyEvent): %s"
                    events.report(log, evse.asset_id, code, msg, evse.asset_id)
        for evse_id in sorted(changed):
            self.csms.publish_status(self.state.evses[evse_id], "fault codes changed")
        return {}

    # -- energy

    @on("TransactionEvent")
    def on_transaction_event(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Follow the EVSE's transaction and publish its meter values."""
        info = payload["transactionInfo"]
        tx_id = info["transactionId"]
        evse_id = payload.get("evse", {}).get("id")
        evse = self.state.evse_of_transaction(tx_id) if evse_id is None else None
        if evse is None:
            if evse_id is None and len(self.state.evses) == 1:
                evse_id = next(iter(self.state.evses))
            evse = self._evse(evse_id, "TransactionEvent", payload)
        if evse is not None:
            self._transaction_event(evse, payload, tx_id)
            self.csms.publish_transaction(evse, payload)
        if "idToken" in payload:
            return {"idTokenInfo": {"status": "Accepted"}}
        return {}

    def _transaction_event(self, evse: EvseState, payload: dict[str, Any], tx_id: str) -> None:
        info = payload["transactionInfo"]
        event_type = payload["eventType"]
        seq_no = payload["seqNo"]
        started = evse.transaction_id != tx_id
        if started:  # a new transaction (or one seen from its middle)
            evse.transaction_id = tx_id
        elif evse.last_tx_seq_no is not None and seq_no - evse.last_tx_seq_no > 1:
            missed = seq_no - evse.last_tx_seq_no - 1
            self.csms.stats.missed_transaction_events += missed
            log.debug("%s: %d transaction events missing before seqNo %d", self.id, missed, seq_no)
        evse.last_tx_seq_no = seq_no
        if "chargingState" in info:
            evse.charging_state = info["chargingState"]
        ended = event_type == "Ended"
        if started and not ended:
            self.csms.publish_status(evse, f"transaction {tx_id} started")
        reason = info.get("stoppedReason")
        if ended and reason in FAULT_REASONS and reason not in evse.faults:
            evse.faults.add(reason)
            msg = "%s: transaction stopped by a fault: %s"
            events.report(log, evse.asset_id, reason, msg, evse.asset_id, detail=reason)
        for meter_value in payload.get("meterValue", ()):
            self.csms.publish_reading(evse, meter_value, ended=ended, frame_no=self.frame_no)
        if ended:
            log.info(
                "%s: transaction %s on EVSE %d ended (%s)",
                self.id,
                tx_id,
                evse.config.evse_id,
                reason or "no reason",
            )
            evse.transaction_id = None
            evse.last_tx_seq_no = None
            evse.charging_state = None
            evse.needs = None
            self.csms.publish_status(
                evse, f"transaction {tx_id} ended ({reason or 'no reason given'})"
            )

    @on("MeterValues")
    def on_meter_values(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Publish meter values sent outside a transaction (or clock-aligned).

        ``evseId`` 0 is the station's main meter, which is not an asset: not published.
        """
        if payload["evseId"] == 0:
            return {}
        evse = self._evse(payload["evseId"], "MeterValues", payload)
        if evse is None:
            return {}
        for meter_value in payload["meterValue"]:
            self.csms.publish_reading(evse, meter_value, ended=False, frame_no=self.frame_no)
        return {}

    @on("NotifyEVChargingNeeds")
    def on_notify_ev_charging_needs(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Keep the car's needs (departure, energy, V2X limits) for telemetry and setpoints."""
        evse = self._evse(payload["evseId"], "NotifyEVChargingNeeds", payload)
        if evse is None:
            return {"status": "Rejected"}
        try:
            needs = charging_needs(payload["chargingNeeds"])
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            self.csms.bad_input(self.id, f"charging needs not usable: {exc}", str(payload))
            return {"status": "Rejected"}
        evse.needs = needs
        log.info(
            "%s: car on EVSE %d needs %s Wh by %s, V2X %s",
            self.id,
            evse.config.evse_id,
            needs.requested_energy_wh,
            payload["chargingNeeds"].get("departureTime"),
            needs.v2x,
        )
        self.csms.publish_status(evse, "charging needs received")
        return {"status": "Accepted"}


class StationSession201(StationSession):
    """A station that negotiated ``ocpp2.0.1``."""

    _ocpp_version = "2.0.1"


class StationSession21(StationSession):
    """A station that negotiated ``ocpp2.1``."""

    _ocpp_version = "2.1"


SESSION_CLASSES: dict[str, type[StationSession]] = {
    "2.0.1": StationSession201,
    "2.1": StationSession21,
}
