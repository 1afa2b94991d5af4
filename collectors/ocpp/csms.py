"""The CSMS: an OCPP-J server that charging stations connect to, publishing to MQTT.

Layers (docs/ocpp.md): WebSocket transport (``websockets``), OCPP-J framing and schema
checks (``collectors.ocpp.rpc``), per-station handlers over per-EVSE state
(``collectors.ocpp.session``), pure mapping to the telemetry contract
(``collectors.ocpp.mapping``) and the publisher (any object with ``publish(topic, payload,
qos, retain) -> bool``, in production ``gridflex.mqtt_asyncio.AsyncMqttClient``, whose
bounded queue keeps telemetry while the broker is unreachable).

Each EVSE of a station is one asset: telemetry and status are published per EVSE. The
way back, setpoints, is decided in ``control.ocpp_plan`` (every device write lives in
``control/``) and sent as a charging profile on the station's connection
(``collectors.ocpp.profiles``: ``set_power``, ``set_local_frequency``, ``clear_profiles``);
control asks for them over MQTT (``collectors.ocpp.requests``).

Everything runs on one asyncio event loop; per-station state is only touched from it.
"""

from __future__ import annotations

import asyncio
import http
import itertools
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.headers import build_www_authenticate_basic
from websockets.http11 import Request, Response

from collectors.ocpp.mapping import (
    MeterReading,
    device_status,
    read_meter_value,
    telemetry_status,
)
from collectors.ocpp.profiles import ChargingProfiles, SetpointResult
from collectors.ocpp.schema import ValidatorCache
from collectors.ocpp.security import (
    FailedAuthDelay,
    certificate_identity,
    check_basic_auth,
    server_ssl_context,
    station_id_from_path,
)
from collectors.ocpp.session import (
    FAULT_REASONS,
    SESSION_CLASSES,
    EvseState,
    MeasuredPower,
    StationSession,
    StationState,
)
from collectors.ocpp.settings import (
    MEASURANDS,
    CsmsSettings,
    EvseConfig,
    StationConfig,
    sampling_variables,
)
from collectors.ocpp.telemetry import StationFields, TelemetryEncoder
from collectors.ocpp.transactions import TransactionLog
from gridflex.access import address_allowed
from gridflex.config import ConfigError
from gridflex.contract import (
    AssetStatus,
    Capabilities,
    CollectorStatus,
    DeadLetter,
    collector_topic,
    deadletter_topic,
    describe_validation_error,
    session_topic,
    status_topic,
)
from gridflex.mqtt_drops import dropped_count

__all__ = [
    "COMPONENT",
    "FAULT_REASONS",
    "MEASURANDS",
    "Csms",
    "CsmsSettings",
    "CsmsStats",
    "EvseConfig",
    "EvseState",
    "MeasuredPower",
    "Publisher",
    "SetpointResult",
    "StationConfig",
    "StationState",
    "collector_will",
    "offered_subprotocols",
    "sampling_variables",
]

log = logging.getLogger(__name__)

#: Component name on the collector and dead-letter topics.
COMPONENT = "ocpp"

SUBPROTOCOLS = {"ocpp2.1": "2.1", "ocpp2.0.1": "2.0.1"}
"""WebSocket subprotocols in order of preference: the server's order wins."""

#: The actions whose schemas the CSMS compiles before it listens: what stations send it
#: (``StationSession``'s handlers) and what it sends them.
WARM_ACTIONS = (
    "Authorize",
    "BootNotification",
    "ClearChargingProfile",
    "Heartbeat",
    "MeterValues",
    "NotifyEVChargingNeeds",
    "NotifyEvent",
    "NotifyReport",
    "SetChargingProfile",
    "SetVariables",
    "StatusNotification",
    "TransactionEvent",
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Publisher(Protocol):
    """Where the CSMS sends its messages (``AsyncMqttClient`` in production)."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue one message; False when it was dropped."""
        ...


@dataclass
class CsmsStats:
    """Counters since start."""

    connections: int = 0
    disconnections: int = 0
    refused_connections: int = 0
    delayed_refusals: int = 0
    bad_frames: int = 0
    telemetry_published: int = 0
    #: Telemetry ``publish`` refused (paho: the new message at a full queue; the native
    #: client drops the oldest instead and counts it in ``stats.dropped`` of the client).
    telemetry_dropped: int = 0
    readings_refused: int = 0
    missed_transaction_events: int = 0
    profiles_sent: int = 0
    sessions_published: int = 0
    #: CALLERROR frames sent to stations (refused frames, handler failures).
    call_errors: int = 0


class Csms(ChargingProfiles):
    """The charging station management system (see the module docstring).

    ``await start()`` binds the server; ``await stop()`` closes every connection and
    publishes the EVSEs and the collector offline.
    """

    stats: CsmsStats

    def __init__(
        self,
        settings: CsmsSettings,
        publisher: Publisher,
        *,
        boot_id: str | None = None,
        component: str = COMPONENT,
    ) -> None:
        self.settings = settings
        #: The presence's component: ``ocpp``, or a shard's ``ocpp-{i}of{n}``.
        self.component = component
        self.publisher = publisher
        self.boot_id = boot_id or uuid.uuid4().hex[:12]
        self.validators = ValidatorCache()
        self.stats = CsmsStats()
        #: Numbers every routed frame of every session, in arrival order.
        self.frames = itertools.count(1)
        self._states = {sid: StationState(cfg) for sid, cfg in settings.stations.items()}
        self._evses: dict[str, EvseState] = {
            evse.asset_id: evse for state in self._states.values() for evse in state.evses.values()
        }
        self._sessions: dict[str, StationSession] = {}
        #: Each EVSE's running transaction, published as ``session/1`` at start and end.
        self.transactions = TransactionLog(settings.site_id)
        self._server: Server | None = None
        self._logged_reasons: set[tuple[str, str]] = set()
        #: Delays the answer to stations and addresses that keep failing authentication.
        self.auth_delay = FailedAuthDelay()

    # -- lifecycle

    async def start(self) -> None:
        """Listen for stations; raises ``KeyFileError`` for an unusable TLS key (profile 2)."""
        ssl_context = None
        profile = self.settings.security_profile
        if profile >= 2:
            if self.settings.tls_cert is None or self.settings.tls_key is None:
                raise ConfigError(f"ocpp: security profile {profile} needs tls_cert and tls_key")
            if profile == 3 and self.settings.tls_ca is None:
                raise ConfigError("ocpp: security profile 3 needs tls_ca")
            ssl_context = server_ssl_context(
                self.settings.tls_cert,
                self.settings.tls_key,
                client_ca=self.settings.tls_ca if profile == 3 else None,
            )
        compiled = self.validators.warm(SUBPROTOCOLS.values(), WARM_ACTIONS)
        log.debug("CSMS: %d OCPP payload validators compiled", compiled)
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
        for evse in self._evses.values():
            self.publish_status(evse, "not connected since the collector started", ts_ms=now)
        self._publish_collector(online=True)
        scheme = "wss" if ssl_context else "ws"
        log.info(
            "CSMS listening on %s://%s:%d/ocpp/{station} for %d stations, %d EVSEs "
            "(security profile %d)",
            scheme,
            self.settings.host,
            self.port,
            len(self._states),
            len(self._evses),
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
            self.publish_station_status(state, "collector stopped")
        self._publish_collector(online=False)

    def station(self, station_id: str) -> StationState | None:
        """The state of one station (read it, do not change it)."""
        return self._states.get(station_id)

    def evse(self, asset_id: str) -> EvseState | None:
        """The state of the EVSE published as ``asset_id`` (read it, do not change it)."""
        return self._evses.get(asset_id)

    @property
    def connected_stations(self) -> list[str]:
        """Ids of the stations connected right now."""
        return sorted(self._sessions)

    @property
    def connected_count(self) -> int:
        """How many stations are connected right now (one ``len``: safe from any thread)."""
        return len(self._sessions)

    @property
    def evse_states(self) -> list[EvseState]:
        """Every EVSE of the site (the set is fixed at start; only their fields change)."""
        return list(self._evses.values())

    # -- connections

    async def _authenticate(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        peer = connection.remote_address[0] if connection.remote_address else None
        if not address_allowed(peer, self.settings.allow_from):
            self.stats.refused_connections += 1
            if (str(peer), "allow_from") not in self._logged_reasons:
                self._logged_reasons.add((str(peer), "allow_from"))
                log.warning("refused %s: address not in [ocpp] allow_from", peer)
            return connection.respond(http.HTTPStatus.FORBIDDEN, "Address not allowed\n")
        station_id = station_id_from_path(request.path)
        state = self._states.get(station_id) if station_id else None
        if state is None:
            self.stats.refused_connections += 1
            log.warning("refused %s: unknown charging station", request.path)
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Unknown charging station\n")
        if self.settings.security_profile == 3:
            ssl_object = connection.transport.get_extra_info("ssl_object")
            identity = certificate_identity(ssl_object.getpeercert() if ssl_object else None)
            if identity != state.config.station_id:
                return await self._refuse(
                    connection,
                    state.config.station_id,
                    peer,
                    http.HTTPStatus.FORBIDDEN,
                    f"certificate names {identity!r}, not this station",
                )
        else:
            header = request.headers.get("Authorization")
            if not check_basic_auth(header, state.config.station_id, state.config.password):
                return await self._refuse(
                    connection,
                    state.config.station_id,
                    peer,
                    http.HTTPStatus.UNAUTHORIZED,
                    "wrong or missing HTTP Basic credentials",
                )
        self.auth_delay.succeeded(state.config.station_id, peer)
        return self._refuse_other_subprotocols(connection, request, state.config.station_id)

    async def _refuse(
        self,
        connection: ServerConnection,
        station_id: str,
        peer: str | None,
        status: http.HTTPStatus,
        reason: str,
    ) -> Response:
        """Answer a failed authentication, later each time the station or address fails."""
        self.stats.refused_connections += 1
        now_s = time.monotonic()
        delay_s = self.auth_delay.delay_s(station_id, peer, now_s)
        self.auth_delay.failed(station_id, peer, now_s)
        log.warning(
            "refused %s from %s: %s (answered after %.1f s)", station_id, peer, reason, delay_s
        )
        if delay_s > 0:
            self.stats.delayed_refusals += 1
            await asyncio.sleep(delay_s)
        if status == http.HTTPStatus.UNAUTHORIZED:
            response = connection.respond(status, "Invalid credentials\n")
            response.headers["WWW-Authenticate"] = build_www_authenticate_basic("gridflex")
            return response
        return connection.respond(status, "Certificate does not match the station\n")

    def _refuse_other_subprotocols(
        self, connection: ServerConnection, request: Request, station_id: str
    ) -> Response | None:
        """HTTP 400 for a station offering no OCPP version this CSMS speaks (OCPP 1.6, none).

        Refused before the WebSocket handshake, so ``websockets`` does not log a failed
        negotiation with its traceback: counted in ``refused_connections``, logged as one
        warning per station (repeats at debug level).
        """
        offered = offered_subprotocols(request)
        if any(name in SUBPROTOCOLS for name in offered):
            return None
        self.stats.refused_connections += 1
        what = "offered " + ", ".join(offered) if offered else "offered no subprotocol"
        self._log_once(
            station_id,
            "subprotocol",
            "%s: refused connection: %s; this CSMS speaks %s",
            what[:200],
            ", ".join(SUBPROTOCOLS),
        )
        return connection.respond(
            http.HTTPStatus.BAD_REQUEST,
            f"Unsupported OCPP version: expected subprotocol {' or '.join(SUBPROTOCOLS)}\n",
        )

    async def _serve_connection(self, connection: ServerConnection) -> None:
        station_id = station_id_from_path(connection.request.path if connection.request else "")
        version = SUBPROTOCOLS.get(connection.subprotocol or "")
        if station_id is None or version is None or station_id not in self._states:
            await connection.close(code=1002, reason="no OCPP subprotocol")
            return
        state = self._states[station_id]
        previous = self._sessions.get(station_id)
        session = SESSION_CLASSES[version](self, state, connection)
        self._sessions[station_id] = session
        if previous is not None:
            log.info("%s reconnected: closing its previous connection", station_id)
            await previous._connection.close(code=1000, reason="replaced by a new connection")
        self.stats.connections += 1
        state.connected = True
        state.booted = False
        state.ocpp_version = "2.1" if version == "2.1" else "2.0.1"
        log.info("%s connected (OCPP %s)", station_id, version)
        self.publish_station_status(state, f"connected (OCPP {version})")
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
                self.publish_station_status(state, "disconnected")

    # -- publishing

    def publish_reading(
        self, evse: EvseState, meter_value: dict[str, object], *, ended: bool, frame_no: int = 0
    ) -> None:
        """Turn one OCPP meter value of an EVSE into a telemetry message.

        ``frame_no`` is the number of the frame that carried it (the read-back after a
        charging profile takes the first power of a frame after the station's answer).
        """
        station_id = evse.station.config.station_id
        try:
            reading = read_meter_value(meter_value)
        except (ValueError, KeyError, TypeError) as exc:
            self.stats.readings_refused += 1
            self.bad_input(station_id, f"meter value not usable: {exc}", str(meter_value))
            return
        power_w = reading.power_w
        if power_w is None:
            # No power in this sample (e.g. a final register only): 0 W unless energy flows.
            flowing = not ended and evse.charging_state == "Charging"
            power_w = evse.last_power_w if flowing else 0.0
        if power_w is None:
            self.stats.readings_refused += 1
            self._log_once(station_id, "no power", "%s: meter values without power: skipped")
            return
        evse.last_power_w = power_w
        if self._publish_telemetry(evse, reading, power_w, ended=ended):
            evse.measured(MeasuredPower(frame_no, power_w, reading.ts_ms))

    def _publish_telemetry(
        self, evse: EvseState, reading: MeterReading, power_w: float, *, ended: bool
    ) -> bool:
        config = evse.config
        evse.seq += 1
        station = StationFields(
            power_w=power_w,
            temp_c=evse.temp_c,
            status=telemetry_status(
                evse.connector_status,
                evse.charging_state,
                evse.faulted,
                power_w=power_w,
                ended=ended,
            ),
            device_status=device_status(evse.connector_status, evse.charging_state, ended=ended),
            transaction_id=evse.transaction_id,
            ev=evse.needs,
        )
        try:
            encoder = evse.encoder
            if encoder is None:
                encoder = TelemetryEncoder(self.settings.site_id, config.asset_id, self.boot_id)
                evse.encoder = encoder
            payload = encoder.encode(reading, station, seq=evse.seq)
        except ValueError as exc:  # pydantic's ValidationError, or a number that is not finite
            self.stats.readings_refused += 1
            why = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            station_id = evse.station.config.station_id
            self.bad_input(station_id, f"meter value out of range: {why}", repr(reading))
            return False
        if self.publisher.publish(encoder.topic, payload, qos=1, retain=False):
            self.stats.telemetry_published += 1
        else:
            self.stats.telemetry_dropped += 1
        return True

    def publish_transaction(self, evse: EvseState, payload: dict[str, Any]) -> None:
        """Publish ``session/1`` when a ``TransactionEvent`` starts or ends a transaction.

        QoS 1, not retained. A refused event is dead-lettered without its payload (which
        holds the id token): only the transaction id and why.
        """
        station_id = evse.station.config.station_id
        tx_id = str(payload["transactionInfo"]["transactionId"])
        try:
            sessions = self.transactions.on_event(evse.asset_id, payload, now_ms=_now_ms())
        except ValueError as exc:  # pydantic's ValidationError, an unreadable timestamp
            why = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            self.bad_input(station_id, f"transaction not usable: {why}", f"transaction {tx_id}")
            return
        topic = session_topic(self.settings.site_id, evse.asset_id)
        for session in sessions:
            if self.publisher.publish(topic, session.to_json(), qos=1, retain=False):
                self.stats.sessions_published += 1

    def publish_station_status(
        self, state: StationState, reason: str, *, ts_ms: int | None = None
    ) -> None:
        """Publish the retained status of every EVSE of a station."""
        for evse in state.evses.values():
            self.publish_status(evse, reason, ts_ms=ts_ms)

    def publish_status(self, evse: EvseState, reason: str, *, ts_ms: int | None = None) -> None:
        """Publish the retained ``AssetStatus`` of one EVSE."""
        config = evse.config
        state = evse.station
        if not state.connected:
            label: Literal["online", "offline", "faulted"] = "offline"
        else:
            label = "faulted" if evse.faulted else "online"
        capabilities = None
        if state.ocpp_version is not None:
            info = state.station_info
            needs = evse.needs
            v2x = state.ocpp_version == "2.1" and needs is not None and needs.v2x
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
                evse.faults | ({"ConnectorFaulted"} if evse.connector_faulted else set())
            ),
            transaction_id=evse.transaction_id,
            capabilities=capabilities,
        )
        topic = status_topic(self.settings.site_id, "evse", config.asset_id)
        self.publisher.publish(topic, status.to_json(), qos=1, retain=True)

    def publish_presence(self, mqtt_dropped: int | None) -> None:
        """Publish the retained online presence again, with a new MQTT drop count."""
        self._publish_collector(online=True, mqtt_dropped=mqtt_dropped)

    def _publish_collector(self, *, online: bool, mqtt_dropped: int | None = None) -> None:
        status = CollectorStatus(
            site=self.settings.site_id,
            component=self.component,
            ts_ms=_now_ms(),
            online=online,
            boot=self.boot_id,
            assets=sorted(self._evses),
            mqtt_dropped=dropped_count(self.publisher) if mqtt_dropped is None else mqtt_dropped,
        )
        topic = collector_topic(self.settings.site_id, self.component)
        self.publisher.publish(topic, status.to_json(), qos=1, retain=True)

    def count_call_error(self) -> None:
        """Count one CALLERROR sent to a station (``stats.call_errors``)."""
        self.stats.call_errors += 1

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


def offered_subprotocols(request: Request) -> list[str]:
    """The WebSocket subprotocols a client offers (``Sec-WebSocket-Protocol``), in order."""
    return [
        name.strip()
        for header in request.headers.get_all("Sec-WebSocket-Protocol")
        for name in header.split(",")
        if name.strip()
    ]


def collector_will(
    site_id: str, boot_id: str | None = None, component: str = COMPONENT
) -> tuple[str, bytes]:
    """The MQTT last will of the OCPP collector: its ``CollectorStatus`` with online false.

    ``component`` is ``ocpp``, or a shard's ``ocpp-{i}of{n}`` (``gridflex.shard``).
    """
    status = CollectorStatus(
        site=site_id, component=component, ts_ms=_now_ms(), online=False, boot=boot_id
    )
    return collector_topic(site_id, component), status.to_json()
