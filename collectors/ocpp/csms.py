"""The CSMS: an OCPP-J server that charging stations connect to, publishing to MQTT.

Layers (docs/ocpp.md): WebSocket transport (``websockets``), OCPP-J framing and schema
checks (``collectors.ocpp.rpc``), per-station handlers (``StationSession``), pure mapping to
the telemetry contract (``collectors.ocpp.mapping``) and the publisher (any object with
``publish(topic, payload, qos, retain) -> bool``, in production ``gridflex.mqtt.MqttClient``,
whose bounded queue keeps telemetry while the broker is unreachable).

Everything runs on one asyncio event loop; per-station state is only touched from it.
"""

from __future__ import annotations

import http
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from ocpp.exceptions import OCPPError
from ocpp.routing import after, on
from pydantic import ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.headers import build_www_authenticate_basic
from websockets.http11 import Request, Response

from collectors.ocpp.mapping import (
    ChargingProfilePlan,
    MeterReading,
    StationFacts,
    charging_needs,
    device_status,
    format_ocpp_time,
    plan_setpoint,
    read_meter_value,
    telemetry_status,
)
from collectors.ocpp.rpc import RpcChargePoint
from collectors.ocpp.schema import ValidatorCache
from collectors.ocpp.security import check_basic_auth, server_ssl_context, station_id_from_path
from collectors.ocpp.telemetry import StationFields, TelemetryEncoder
from gridflex.config import ConfigError, SiteConfig
from gridflex.contract import (
    AssetStatus,
    Capabilities,
    CollectorStatus,
    DeadLetter,
    EvChargingNeeds,
    collector_topic,
    deadletter_topic,
    describe_validation_error,
    status_topic,
)

__all__ = [
    "COMPONENT",
    "Csms",
    "CsmsSettings",
    "CsmsStats",
    "Publisher",
    "SetpointResult",
    "StationConfig",
    "StationState",
    "sampling_variables",
]

log = logging.getLogger(__name__)

#: Component name on the collector and dead-letter topics.
COMPONENT = "ocpp"

SUBPROTOCOLS = {"ocpp2.1": "2.1", "ocpp2.0.1": "2.0.1"}
"""WebSocket subprotocols in order of preference: the server's order wins."""

#: Transaction stop reasons that are faults of the station (OCPP ``ReasonEnumType``).
FAULT_REASONS = frozenset({"GroundFault", "OvercurrentFault", "EmergencyStop", "PowerQuality"})

#: Measurands the CSMS asks stations to sample (SampledDataCtrlr / AlignedDataCtrlr).
MEASURANDS = (
    "Energy.Active.Import.Register,Energy.Active.Export.Register,"
    "Power.Active.Import,Power.Active.Export,SoC,Current.Import,Current.Export,Voltage"
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Publisher(Protocol):
    """Where the CSMS sends its messages (``gridflex.mqtt.MqttClient`` in production)."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue one message; False when it was dropped."""
        ...


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class StationConfig:
    """One charging station declared in the site file (one EVSE per station)."""

    station_id: str
    asset_id: str
    password: str | None
    max_charge_w: float
    max_discharge_w: float


@dataclass(frozen=True)
class CsmsSettings:
    """Everything the CSMS needs, taken from ``site.ocpp`` and ``site.evses``."""

    site_id: str
    stations: Mapping[str, StationConfig]
    host: str = "127.0.0.1"
    port: int = 9000
    meter_interval_s: float = 1.0
    response_timeout_s: float = 10.0
    heartbeat_interval_s: int = 300
    security_profile: Literal[1, 2] = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def from_site(cls, site: SiteConfig) -> CsmsSettings:
        """Build the settings; raises ``ConfigError`` for an EVSE without a password."""
        source = site.source or "<site>"
        stations: dict[str, StationConfig] = {}
        for index, asset in enumerate(site.assets):
            if asset.kind != "evse":
                continue
            if asset.password is None:
                raise ConfigError(
                    f"config error in {source}: assets[{index}].password: security profile "
                    f"{site.ocpp.security_profile} needs an HTTP Basic password (16-40 "
                    f"characters) for station {asset.station!r}"
                )
            stations[asset.station] = StationConfig(
                station_id=asset.station,
                asset_id=asset.id,
                password=asset.password,
                max_charge_w=asset.max_charge_w,
                max_discharge_w=asset.max_discharge_w,
            )
        ocpp = site.ocpp
        return cls(
            site_id=site.id,
            stations=stations,
            host=ocpp.host,
            port=ocpp.port,
            meter_interval_s=ocpp.meter_interval_s,
            response_timeout_s=ocpp.response_timeout_s,
            heartbeat_interval_s=ocpp.heartbeat_interval_s,
            security_profile=ocpp.security_profile,
            tls_cert=ocpp.tls_cert,
            tls_key=ocpp.tls_key,
        )


def sampling_variables(meter_interval_s: float, *, whole_seconds: bool) -> list[dict[str, Any]]:
    """SetVariables entries for the meter-value interval (OCPP 2.x device model).

    ``SampledDataCtrlr.TxUpdatedInterval`` is an integer of seconds in the standard; a
    sub-second interval is first offered as a decimal (``"0.2"``), which gridflex's simulator
    and some stations accept, and, when refused, again rounded up to whole seconds
    (``whole_seconds=True``). Clock-aligned values (``AlignedDataCtrlr``) are asked for
    while idle only, so idle stations report too.
    """
    if whole_seconds or float(meter_interval_s).is_integer():
        interval = str(max(1, int(-(-meter_interval_s // 1))))
    else:
        interval = f"{meter_interval_s:g}"
    aligned = str(max(1, round(meter_interval_s)))

    def entry(component: str, variable: str, value: str) -> dict[str, Any]:
        return {
            "attributeValue": value,
            "component": {"name": component},
            "variable": {"name": variable},
        }

    return [
        entry("SampledDataCtrlr", "TxUpdatedInterval", interval),
        entry("SampledDataCtrlr", "TxUpdatedMeasurands", MEASURANDS),
        entry("AlignedDataCtrlr", "Interval", aligned),
        entry("AlignedDataCtrlr", "Measurands", MEASURANDS),
        entry("AlignedDataCtrlr", "SendDuringIdle", "true"),
    ]


# --------------------------------------------------------------------------- state


@dataclass
class StationState:
    """What the CSMS knows about one station; changed only on the event loop."""

    config: StationConfig
    ocpp_version: Literal["2.0.1", "2.1"] | None = None
    connected: bool = False
    booted: bool = False
    station_info: dict[str, Any] = field(default_factory=dict)
    connector_status: str | None = None
    charging_state: str | None = None
    transaction_id: str | None = None
    last_tx_seq_no: int | None = None
    needs: EvChargingNeeds | None = None
    faults: set[str] = field(default_factory=set)
    last_power_w: float | None = None
    temp_c: float | None = None
    meter_interval_s: float | None = None
    seq: int = 0
    encoder: TelemetryEncoder | None = field(default=None, repr=False)

    @property
    def connector_faulted(self) -> bool:
        """Whether the connector reported Faulted (StatusNotification)."""
        return self.connector_status == "Faulted"

    @property
    def faulted(self) -> bool:
        """Whether the connector is Faulted or a fault code is active."""
        return self.connector_faulted or bool(self.faults)


@dataclass
class CsmsStats:
    """Counters since start."""

    connections: int = 0
    disconnections: int = 0
    refused_connections: int = 0
    bad_frames: int = 0
    telemetry_published: int = 0
    telemetry_dropped: int = 0
    readings_refused: int = 0
    missed_transaction_events: int = 0


SetpointStatus = Literal["accepted", "rejected", "refused", "timeout", "offline", "error"]


@dataclass(frozen=True)
class SetpointResult:
    """What happened to one ``set_power`` request.

    ``status``: ``accepted`` / ``rejected`` (the station's answer), ``refused`` (not sent:
    see ``reason``), ``timeout`` (no answer within the response timeout), ``offline`` (not
    connected) or ``error`` (a CALLERROR or an invalid answer).
    """

    station_id: str
    requested_w: float
    status: SetpointStatus
    reason: str | None = None
    sent_w: float | None = None
    operation_mode: str | None = None
    ocpp_version: str | None = None

    @property
    def accepted(self) -> bool:
        """Whether the station accepted the charging profile."""
        return self.status == "accepted"


# --------------------------------------------------------------------------- sessions


class StationSession(RpcChargePoint):
    """One station's WebSocket connection: OCPP handlers over the shared ``StationState``."""

    def __init__(self, csms: Csms, state: StationState, connection: ServerConnection) -> None:
        super().__init__(
            state.config.station_id,
            connection,
            validators=csms.validators,
            response_timeout_s=csms.settings.response_timeout_s,
            on_bad_input=lambda reason, raw: csms.bad_input(self.id, reason, raw),
        )
        self.csms = csms
        self.state = state

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
        self.csms.publish_status(self.state, "booted")
        return {
            "currentTime": format_ocpp_time(_now_ms()),
            "interval": self.csms.settings.heartbeat_interval_s,
            "status": "Accepted",
        }

    @after("BootNotification")
    async def after_boot_notification(self, _payload: dict[str, Any]) -> None:
        """Set the meter-value sampling once the station has its BootNotification answer."""
        await self.configure_sampling()

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
        """Track the connector status; leaving Faulted clears the fault codes."""
        status = payload["connectorStatus"]
        was_faulted = self.state.connector_faulted
        self.state.connector_status = status
        if was_faulted and status != "Faulted":
            self.state.faults.clear()
        self.csms.publish_status(self.state, f"connector {status}")
        return {}

    @on("NotifyEvent")
    def on_notify_event(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Collect fault codes (``techCode``, ``Problem`` events) and connector temperatures."""
        changed = False
        for event in payload.get("eventData", []):
            variable = event.get("variable", {}).get("name")
            code = event.get("techCode")
            if variable == "Temperature" and code is None:
                try:
                    self.state.temp_c = float(event["actualValue"])
                except ValueError:
                    self.csms.bad_input(self.id, "temperature is not a number", str(event))
                continue
            if variable != "Problem" and code is None:
                continue
            code = code or f"{event.get('component', {}).get('name', '?')}.Problem"
            if event.get("cleared") or event.get("actualValue") == "false":
                changed |= code in self.state.faults
                self.state.faults.discard(code)
            elif code not in self.state.faults:
                self.state.faults.add(code)
                changed = True
        if changed:
            self.csms.publish_status(self.state, "fault codes changed")
        return {}

    # -- energy

    @on("TransactionEvent")
    def on_transaction_event(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Follow the transaction and publish its meter values."""
        state = self.state
        info = payload["transactionInfo"]
        event_type = payload["eventType"]
        tx_id = info["transactionId"]
        seq_no = payload["seqNo"]
        started = state.transaction_id != tx_id
        if started:  # a new transaction (or one seen from its middle)
            state.transaction_id = tx_id
        elif state.last_tx_seq_no is not None and seq_no - state.last_tx_seq_no > 1:
            missed = seq_no - state.last_tx_seq_no - 1
            self.csms.stats.missed_transaction_events += missed
            log.debug("%s: %d transaction events missing before seqNo %d", self.id, missed, seq_no)
        state.last_tx_seq_no = seq_no
        if "chargingState" in info:
            state.charging_state = info["chargingState"]
        ended = event_type == "Ended"
        if started and not ended:
            self.csms.publish_status(state, f"transaction {tx_id} started")
        reason = info.get("stoppedReason")
        if ended and reason in FAULT_REASONS:
            state.faults.add(reason)
        for meter_value in payload.get("meterValue", ()):
            self.csms.publish_reading(state, meter_value, ended=ended)
        if ended:
            log.info("%s: transaction %s ended (%s)", self.id, tx_id, reason or "no reason")
            state.transaction_id = None
            state.last_tx_seq_no = None
            state.charging_state = None
            state.needs = None
            self.csms.publish_status(
                state, f"transaction {tx_id} ended ({reason or 'no reason given'})"
            )
        if "idToken" in payload:
            return {"idTokenInfo": {"status": "Accepted"}}
        return {}

    @on("MeterValues")
    def on_meter_values(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Publish meter values sent outside a transaction (or clock-aligned)."""
        for meter_value in payload["meterValue"]:
            self.csms.publish_reading(self.state, meter_value, ended=False)
        return {}

    @on("NotifyEVChargingNeeds")
    def on_notify_ev_charging_needs(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Keep the car's needs (departure, energy, V2X limits) for telemetry and setpoints."""
        try:
            needs = charging_needs(payload["chargingNeeds"])
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            self.csms.bad_input(self.id, f"charging needs not usable: {exc}", str(payload))
            return {"status": "Rejected"}
        self.state.needs = needs
        log.info(
            "%s: car needs %s Wh by %s, V2X %s",
            self.id,
            needs.requested_energy_wh,
            payload["chargingNeeds"].get("departureTime"),
            needs.v2x,
        )
        self.csms.publish_status(self.state, "charging needs received")
        return {"status": "Accepted"}


class StationSession201(StationSession):
    """A station that negotiated ``ocpp2.0.1``."""

    _ocpp_version = "2.0.1"


class StationSession21(StationSession):
    """A station that negotiated ``ocpp2.1``."""

    _ocpp_version = "2.1"


_SESSION_CLASSES: dict[str, type[StationSession]] = {
    "2.0.1": StationSession201,
    "2.1": StationSession21,
}


# --------------------------------------------------------------------------- server


class Csms:
    """The charging station management system (see the module docstring).

    ``await start()`` binds the server; ``await stop()`` closes every connection and
    publishes the stations and the collector offline. ``set_power`` is the setpoint path.
    """

    def __init__(
        self, settings: CsmsSettings, publisher: Publisher, *, boot_id: str | None = None
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.boot_id = boot_id or uuid.uuid4().hex[:12]
        self.validators = ValidatorCache()
        self.stats = CsmsStats()
        self._states = {sid: StationState(cfg) for sid, cfg in settings.stations.items()}
        self._sessions: dict[str, StationSession] = {}
        self._server: Server | None = None
        self._logged_reasons: set[tuple[str, str]] = set()

    # -- lifecycle

    async def start(self) -> None:
        """Listen for stations; raises ``KeyFileError`` for an unusable TLS key (profile 2)."""
        ssl_context = None
        if self.settings.security_profile == 2:
            if self.settings.tls_cert is None or self.settings.tls_key is None:
                raise ConfigError("ocpp: security profile 2 needs tls_cert and tls_key")
            ssl_context = server_ssl_context(self.settings.tls_cert, self.settings.tls_key)
        self._server = await serve(
            self._serve_connection,
            self.settings.host,
            self.settings.port,
            subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
            process_request=self._authenticate,
            compression=None,
            ssl=ssl_context,
        )
        now = _now_ms()
        for state in self._states.values():
            self.publish_status(state, "not connected since the collector started", ts_ms=now)
        self._publish_collector(online=True)
        scheme = "wss" if ssl_context else "ws"
        log.info(
            "CSMS listening on %s://%s:%d/ocpp/{station} for %d stations (security profile %d)",
            scheme,
            self.settings.host,
            self.port,
            len(self._states),
            self.settings.security_profile,
        )

    @property
    def port(self) -> int:
        """The bound TCP port (useful with port 0)."""
        if self._server is None:
            return self.settings.port
        sockets = list(self._server.sockets)
        return int(sockets[0].getsockname()[1]) if sockets else self.settings.port

    async def stop(self) -> None:
        """Close every station connection, then publish everything offline."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for state in self._states.values():
            state.connected = False
            self.publish_status(state, "collector stopped")
        self._publish_collector(online=False)

    def station(self, station_id: str) -> StationState | None:
        """The state of one station (read it, do not change it)."""
        return self._states.get(station_id)

    @property
    def connected_stations(self) -> list[str]:
        """Ids of the stations connected right now."""
        return sorted(self._sessions)

    # -- connections

    def _authenticate(self, connection: ServerConnection, request: Request) -> Response | None:
        station_id = station_id_from_path(request.path)
        state = self._states.get(station_id) if station_id else None
        if state is None:
            self.stats.refused_connections += 1
            log.warning("refused %s: unknown charging station", request.path)
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Unknown charging station\n")
        header = request.headers.get("Authorization")
        if not check_basic_auth(header, state.config.station_id, state.config.password):
            self.stats.refused_connections += 1
            log.warning("refused %s: wrong or missing HTTP Basic credentials", station_id)
            response = connection.respond(http.HTTPStatus.UNAUTHORIZED, "Invalid credentials\n")
            response.headers["WWW-Authenticate"] = build_www_authenticate_basic("gridflex")
            return response
        return None

    async def _serve_connection(self, connection: ServerConnection) -> None:
        station_id = station_id_from_path(connection.request.path if connection.request else "")
        version = SUBPROTOCOLS.get(connection.subprotocol or "")
        if station_id is None or version is None or station_id not in self._states:
            await connection.close(code=1002, reason="no OCPP subprotocol")
            return
        state = self._states[station_id]
        previous = self._sessions.get(station_id)
        session = _SESSION_CLASSES[version](self, state, connection)
        self._sessions[station_id] = session
        if previous is not None:
            log.info("%s reconnected: closing its previous connection", station_id)
            await previous._connection.close(code=1000, reason="replaced by a new connection")
        self.stats.connections += 1
        state.connected = True
        state.booted = False
        state.ocpp_version = "2.1" if version == "2.1" else "2.0.1"
        log.info("%s connected (OCPP %s)", station_id, version)
        self.publish_status(state, f"connected (OCPP {version})")
        try:
            await session.start()
        except ConnectionClosed:
            pass
        finally:
            self.stats.disconnections += 1
            if self._sessions.get(station_id) is session:
                del self._sessions[station_id]
                state.connected = False
                log.info("%s disconnected", station_id)
                self.publish_status(state, "disconnected")

    # -- publishing

    def publish_reading(
        self, state: StationState, meter_value: dict[str, Any], *, ended: bool
    ) -> None:
        """Turn one OCPP meter value into a telemetry message."""
        station_id = state.config.station_id
        try:
            reading = read_meter_value(meter_value)
        except (ValueError, KeyError, TypeError) as exc:
            self.stats.readings_refused += 1
            self.bad_input(station_id, f"meter value not usable: {exc}", str(meter_value))
            return
        power_w = reading.power_w
        if power_w is None:
            # No power in this sample (e.g. a final register only): 0 W unless energy flows.
            flowing = not ended and state.charging_state == "Charging"
            power_w = state.last_power_w if flowing else 0.0
        if power_w is None:
            self.stats.readings_refused += 1
            self._log_once(station_id, "no power", "%s: meter values without power: skipped")
            return
        state.last_power_w = power_w
        self._publish_telemetry(state, reading, power_w, ended=ended)

    def _publish_telemetry(
        self, state: StationState, reading: MeterReading, power_w: float, *, ended: bool
    ) -> None:
        config = state.config
        state.seq += 1
        station = StationFields(
            power_w=power_w,
            temp_c=state.temp_c,
            status=telemetry_status(
                state.connector_status,
                state.charging_state,
                state.faulted,
                power_w=power_w,
                ended=ended,
            ),
            device_status=device_status(state.connector_status, state.charging_state, ended=ended),
            transaction_id=state.transaction_id,
            ev=state.needs,
        )
        try:
            encoder = state.encoder
            if encoder is None:
                encoder = TelemetryEncoder(self.settings.site_id, config.asset_id, self.boot_id)
                state.encoder = encoder
            payload = encoder.encode(reading, station, seq=state.seq)
        except ValueError as exc:  # pydantic's ValidationError, or a number that is not finite
            self.stats.readings_refused += 1
            why = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            self.bad_input(config.station_id, f"meter value out of range: {why}", repr(reading))
            return
        if self.publisher.publish(encoder.topic, payload, qos=1, retain=False):
            self.stats.telemetry_published += 1
        else:
            self.stats.telemetry_dropped += 1

    def publish_status(self, state: StationState, reason: str, *, ts_ms: int | None = None) -> None:
        """Publish the retained ``AssetStatus`` of one station."""
        config = state.config
        if not state.connected:
            label: Literal["online", "offline", "faulted"] = "offline"
        else:
            label = "faulted" if state.faulted else "online"
        capabilities = None
        if state.ocpp_version is not None:
            info = state.station_info
            v2x = state.ocpp_version == "2.1" and state.needs is not None and state.needs.v2x
            needs = state.needs
            capabilities = Capabilities(
                protocol=f"ocpp{state.ocpp_version}",
                rated_charge_w=needs.max_charge_w if needs is not None else None,
                rated_discharge_w=needs.max_discharge_w if needs is not None else None,
                site_max_charge_w=config.max_charge_w,
                site_max_discharge_w=config.max_discharge_w,
                v2x=v2x,
                manufacturer=info.get("vendorName"),
                model=info.get("model"),
                serial=info.get("serialNumber"),
                firmware=info.get("firmwareVersion"),
            )
        status = AssetStatus(
            site=self.settings.site_id,
            asset=config.asset_id,
            kind="evse",
            ts_ms=ts_ms if ts_ms is not None else _now_ms(),
            boot=self.boot_id,
            online=state.connected,
            state=label,
            reason=reason,
            faults=sorted(
                state.faults | ({"ConnectorFaulted"} if state.connector_faulted else set())
            ),
            transaction_id=state.transaction_id,
            capabilities=capabilities,
        )
        topic = status_topic(self.settings.site_id, "evse", config.asset_id)
        self.publisher.publish(topic, status.to_json(), qos=1, retain=True)

    def _publish_collector(self, *, online: bool) -> None:
        status = CollectorStatus(
            site=self.settings.site_id,
            component=COMPONENT,
            ts_ms=_now_ms(),
            online=online,
            boot=self.boot_id,
            assets=sorted(cfg.asset_id for cfg in self.settings.stations.values()),
        )
        topic = collector_topic(self.settings.site_id, COMPONENT)
        self.publisher.publish(topic, status.to_json(), qos=1, retain=True)

    def bad_input(self, station_id: str, reason: str, raw: str) -> None:
        """Count, log once per station and reason, and dead-letter a refused input."""
        self.stats.bad_frames += 1
        self._log_once(station_id, reason.split(":", 1)[0], "%s: refused input: %s", reason)
        letter = DeadLetter(
            site=self.settings.site_id,
            component=COMPONENT,
            ts_ms=_now_ms(),
            reason=f"{station_id}: {reason}"[:1000],
            topic=f"ocpp/{station_id}",
            payload=raw[:10_000],
        )
        self.publisher.publish(deadletter_topic(COMPONENT), letter.to_json(), qos=1)

    def _log_once(self, station_id: str, kind: str, message: str, *args: object) -> None:
        key = (station_id, kind)
        if key in self._logged_reasons:
            log.debug(message, station_id, *args)
            return
        self._logged_reasons.add(key)
        log.warning(message, station_id, *args)

    # -- setpoints

    async def set_power(
        self,
        station_id: str,
        power_w: float,
        *,
        valid_for_s: float | None = None,
        max_offline_s: int | None = None,
    ) -> SetpointResult:
        """Send an absolute power setpoint to a station as a charging profile.

        ``power_w`` is + charging, - discharging. The profile follows ``plan_setpoint``'s
        rules (CentralSetpoint for OCPP 2.1 V2X cars, a non-negative TxProfile limit
        otherwise); discharge that cannot be honoured is refused, not sent. ``valid_for_s``
        sets the profile's ``validTo`` so the station reverts to its default when commands
        stop. Never raises for station trouble: the result says what happened.
        """
        state = self._states.get(station_id)
        session = self._sessions.get(station_id)
        if state is None:
            return SetpointResult(station_id, power_w, "refused", "unknown station")
        if session is None or state.ocpp_version is None:
            return SetpointResult(station_id, power_w, "offline", "station not connected")
        facts = StationFacts(
            ocpp_version=state.ocpp_version,
            transaction_id=state.transaction_id,
            needs=state.needs,
            max_charge_w=state.config.max_charge_w,
            max_discharge_w=state.config.max_discharge_w,
        )
        valid_to = None
        if valid_for_s is not None:
            valid_to = format_ocpp_time(_now_ms() + round(valid_for_s * 1000))
        plan = plan_setpoint(facts, power_w, valid_to=valid_to, max_offline_s=max_offline_s)
        version = state.ocpp_version
        if not isinstance(plan, ChargingProfilePlan):
            log.info("%s: setpoint %.0f W refused: %s", station_id, power_w, plan.reason)
            return SetpointResult(station_id, power_w, "refused", plan.reason, ocpp_version=version)
        return await self._send_profile(session, plan, power_w)

    async def _send_profile(
        self, session: StationSession, plan: ChargingProfilePlan, power_w: float
    ) -> SetpointResult:
        station_id = session.id

        def result(status: SetpointStatus, reason: str | None) -> SetpointResult:
            return SetpointResult(
                station_id,
                power_w,
                status,
                reason,
                sent_w=plan.sent_w,
                operation_mode=plan.operation_mode,
                ocpp_version=session.state.ocpp_version,
            )

        try:
            answer = await session.call_payload("SetChargingProfile", plan.request)
        except TimeoutError:
            log.warning("%s: no answer to SetChargingProfile in time", station_id)
            return result("timeout", f"no answer within {self.settings.response_timeout_s} s")
        except OCPPError as exc:
            log.warning("%s: SetChargingProfile failed: %s", station_id, exc)
            return result("error", f"{exc.code}: {exc.description}")
        except ConnectionClosed:
            return result("offline", "connection closed while waiting for the answer")
        status_info = answer.get("statusInfo") or {}
        reason: str | None = status_info.get("reasonCode")
        if status_info.get("additionalInfo"):
            reason = f"{reason}: {status_info['additionalInfo']}"
        outcome: SetpointStatus = "accepted" if answer.get("status") == "Accepted" else "rejected"
        log.info(
            "%s: %s %.0f W (asked %.0f W) %s",
            station_id,
            plan.operation_mode,
            plan.sent_w,
            power_w,
            outcome,
        )
        return result(outcome, reason)


def collector_will(site_id: str, boot_id: str | None = None) -> tuple[str, bytes]:
    """The MQTT last will of the OCPP collector: its ``CollectorStatus`` with online false."""
    status = CollectorStatus(
        site=site_id, component=COMPONENT, ts_ms=_now_ms(), online=False, boot=boot_id
    )
    return collector_topic(site_id, COMPONENT), status.to_json()
