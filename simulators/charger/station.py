"""A simulated station on the wire: the station's behaviour and the fleet runner.

``SimStation`` connects to ``{csms-url}/{station_id}`` (``websockets``' client, its own
reconnect backoff), runs the OCPP conversation with the ``ocpp`` library's ``ChargePoint``
(``simulators.charger.handlers``: the handlers of SetVariables, SetChargingProfile and
ClearChargingProfile, and the hot-path ``call_wire``), steps each
EVSE's car (``simulators.charger.evse``, ``simulators.ev``) under the profiles in force and
injects its faults. Profiles it acts on: TxProfile (the EVSE's transaction; CentralSetpoint,
LocalFrequency, ChargingOnly or a plain limit), TxDefaultProfile (an EVSE, or every EVSE
with evseId 0; with or without a transaction), ChargingStationMaxProfile (evseId 0: the
EVSEs' charging together). LocalFrequency follows the station's own grid frequency
(``frequency``: a ``simulators.grid_frequency`` source; nominal when none is given).
``run_fleet`` runs a list of ``StationSpec`` until ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import random
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from simulators.charger.control import (
    Control,
    control_from_profile,
    requested_power_w,
    share_station_max,
)
from simulators.charger.evse import Profile, SimEvse
from simulators.charger.fleet import StationSpec
from simulators.charger.handlers import SimChargePoint21, SimChargePoint201
from simulators.charger.wire import (
    DEFAULT_MEASURANDS,
    SUPPORTED_MEASURANDS,
    charging_needs_payload,
    next_meter_s,
    ocpp_time,
)
from simulators.ev import ThermalSpec, initial_state, step
from simulators.grid_frequency import FrequencyProfile, FrequencySource

__all__ = ["SimStation", "StationCounters", "run_fleet"]

log = logging.getLogger(__name__)

OVERTEMP_OFFSET_C = 50.0


@dataclass
class StationCounters:
    """What one station did."""

    connects: int = 0
    messages_sent: int = 0
    messages_dropped: int = 0
    profiles_received: int = 0
    calls_ignored: int = 0


class SimStation:
    """One simulated station: connection, OCPP behaviour, and per EVSE a car."""

    def __init__(
        self,
        spec: StationSpec,
        csms_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        response_timeout_s: float = 30.0,
        thermal: ThermalSpec | None = None,
        frequency: FrequencySource | None = None,
        nominal_hz: float = 50.0,
    ) -> None:
        self.spec = spec
        self.url = f"{csms_url.rstrip('/')}/{spec.station_id}"
        self.ssl_context = ssl_context
        self.response_timeout_s = response_timeout_s
        self.thermal = thermal or ThermalSpec()
        self.frequency: FrequencySource = frequency or FrequencyProfile((0.0,), (nominal_hz,))
        self.counters = StationCounters()
        self.rng = random.Random(spec.seed)
        # OCPP device model, as set by the CSMS
        self.tx_interval_s = 10.0
        self.aligned_interval_s = 60.0
        self.measurands = DEFAULT_MEASURANDS
        self.heartbeat_interval_s = 300.0
        # station and cars
        self.evses = {e.evse_id: SimEvse(e, 1_000_000.0 * self.rng.random()) for e in spec.evses}
        self.station_default: Profile | None = None
        self.station_max: Profile | None = None
        self.received_profiles: list[dict[str, Any]] = []
        self.event_seq_no = 0
        self.faulted = False
        self.hung = False
        self.freq_hz: float | None = None
        self._t0 = time.monotonic()
        self._epoch0 = time.time()

    # -- what the CSMS sets (called from the handlers)

    def set_variable(self, item: dict[str, Any]) -> dict[str, Any]:
        """Apply one SetVariables entry; answer with its ``attribute_status``."""
        component = item["component"]["name"]
        variable = item["variable"]["name"]
        value = str(item["attribute_value"])
        status = "Accepted"
        try:
            if (component, variable) == ("SampledDataCtrlr", "TxUpdatedInterval"):
                interval_s = float(value)
                if interval_s < 0.1:
                    raise ValueError(value)
                self.tx_interval_s = interval_s
            elif (component, variable) == ("AlignedDataCtrlr", "Interval"):
                self.aligned_interval_s = max(1.0, float(int(value)))
            elif variable in {"Measurands", "TxUpdatedMeasurands"}:
                wanted = frozenset(m.strip() for m in value.split(",") if m.strip())
                if not wanted <= SUPPORTED_MEASURANDS:
                    raise ValueError(value)
                if component == "SampledDataCtrlr":
                    self.measurands = wanted
            elif (component, variable) == ("AlignedDataCtrlr", "SendDuringIdle"):
                pass
            else:
                status = "UnknownVariable"
        except ValueError:
            status = "Rejected"
        return {
            "attribute_status": status,
            "component": item["component"],
            "variable": item["variable"],
        }

    def control_of(self, evse_id: int) -> Control | None:
        """The profile an EVSE follows: its own, else the station's TxDefaultProfile (evseId 0).

        Its own is the TxProfile during a transaction, else its TxDefaultProfile.
        """
        now_s = time.time()
        own = self.evses[evse_id].own_control(now_s)
        if own is not None:
            return own
        held = self.station_default
        return held.control if held is not None and held.valid(now_s) else None

    def station_max_w(self) -> float | None:
        """The ChargingStationMaxProfile's limit in force, W; None when there is none."""
        held = self.station_max
        if held is None or not held.valid(time.time()):
            return None
        return held.control.limit_w

    def apply_profile(self, evse_id: int, profile: dict[str, Any]) -> tuple[str, str | None]:
        """Apply a SetChargingProfile request; (status, reason code)."""
        self.counters.profiles_received += 1
        self.received_profiles.append(profile)
        purpose = profile.get("charging_profile_purpose")
        if purpose not in ("TxProfile", "TxDefaultProfile", "ChargingStationMaxProfile"):
            return "Rejected", "UnsupportedPurpose"
        evse = self.evses.get(evse_id)
        if purpose == "ChargingStationMaxProfile" and evse_id != 0:
            return "Rejected", "InvalidValue"  # the station-wide limit is set on evseId 0
        if evse is None and (purpose == "TxProfile" or evse_id != 0):
            return "Rejected", "UnknownEVSE"
        if purpose == "TxProfile" and (
            evse is None
            or evse.transaction_id is None
            or profile.get("transaction_id") != evse.transaction_id
        ):
            return "Rejected", "TxNotFound"
        try:
            control = control_from_profile(profile)
        except (ValueError, KeyError, IndexError, TypeError):
            return "Rejected", "InvalidSchedule"
        if self.spec.ocpp_version == "2.0.1" and (control.limit_w or 0.0) < 0:
            return "Rejected", "InvalidValue"
        valid_to = profile.get("valid_to")
        try:
            valid_to_s = None if valid_to is None else datetime.fromisoformat(valid_to).timestamp()
        except ValueError:
            return "Rejected", "InvalidSchedule"
        applied = Profile(int(profile["id"]), control, valid_to_s)
        if purpose == "ChargingStationMaxProfile":
            self.station_max = applied
        elif purpose == "TxDefaultProfile" and evse is None:
            self.station_default = applied
        elif purpose == "TxDefaultProfile":
            assert evse is not None
            evse.default_profile = applied
        else:
            assert evse is not None
            evse.tx_profile = applied
        self._follow_now()
        return "Accepted", None

    def _follow_now(self) -> None:
        """The cars take up changed profiles at once (a step of 0 s: power, no energy).

        So every meter value sent after the answer shows the new power, also one of another
        EVSE already due in the same loop turn.
        """
        self._advance(0.0, self._sim_time_s())

    def clear_profiles(
        self, profile_id: int | None = None, criteria: dict[str, Any] | None = None
    ) -> str:
        """ClearChargingProfile by id or by criteria (evse_id, purpose); Accepted or Unknown."""
        criteria = criteria or {}
        purpose = criteria.get("charging_profile_purpose")
        evse_id = criteria.get("evse_id")
        cleared = False

        def matches(held: Profile | None, its_purpose: str, its_evse: int) -> bool:
            if held is None:
                return False
            if profile_id is not None:
                return held.profile_id == profile_id
            return purpose in (None, its_purpose) and evse_id in (None, its_evse)

        for evse in self.evses.values():
            if matches(evse.tx_profile, "TxProfile", evse.evse_id):
                evse.tx_profile, cleared = None, True
            if matches(evse.default_profile, "TxDefaultProfile", evse.evse_id):
                evse.default_profile, cleared = None, True
        if matches(self.station_default, "TxDefaultProfile", 0):
            self.station_default, cleared = None, True
        if matches(self.station_max, "ChargingStationMaxProfile", 0):
            self.station_max, cleared = None, True
        self._follow_now()
        return "Accepted" if cleared else "Unknown"

    # -- run

    async def run(self, stop: asyncio.Event) -> None:
        """Connect (and reconnect) until ``stop`` is set; returns early if refused."""
        headers = {}
        if self.spec.password is not None:
            token = f"{self.spec.station_id}:{self.spec.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        subprotocol = f"ocpp{self.spec.ocpp_version}"
        try:
            async for ws in connect(
                self.url,
                subprotocols=[subprotocol],  # type: ignore[list-item]
                additional_headers=headers,
                ssl=self.ssl_context,
                compression=None,
                open_timeout=30,
                max_queue=64,
            ):
                self.counters.connects += 1
                if await self._session(ws, stop):
                    await ws.close()
                    return
        except InvalidStatus as exc:
            log.error("%s: the CSMS refused the connection: %s", self.spec.station_id, exc)

    async def _session(self, ws: ClientConnection, stop: asyncio.Event) -> bool:
        cls = SimChargePoint21 if self.spec.ocpp_version == "2.1" else SimChargePoint201
        cp = cls(self.spec.station_id, ws, response_timeout=self.response_timeout_s)
        cp.station = self
        ids = itertools.count(1)
        prefix = uuid.uuid4().hex[:8]
        cp._unique_id_generator = lambda: f"{prefix}-{next(ids)}"
        receiver = asyncio.ensure_future(cp.start())
        behaviour = asyncio.ensure_future(self._behave(cp, stop))
        done, pending = await asyncio.wait(
            {receiver, behaviour}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if behaviour in done and behaviour.exception() is None:
            return True
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, ConnectionClosed | asyncio.TimeoutError):
                log.error("%s: station stopped: %r", self.spec.station_id, exc)
                return True
        log.info("%s: connection lost, reconnecting", self.spec.station_id)
        return False

    def _sim_time_s(self) -> float:
        return time.monotonic() - self._t0

    def _dropped(self) -> bool:
        rate = self.spec.faults.drop_rate
        if rate and self.rng.random() < rate:
            self.counters.messages_dropped += 1
            return True
        return False

    async def _call(self, cp: Any, payload: Any) -> Any:
        """Send a library request dataclass (validated against the schema by the library)."""
        self.counters.messages_sent += 1
        return await cp.call(payload, suppress=False)

    async def _send_wire(
        self, cp: Any, action: str, payload: dict[str, Any], *, periodic: bool = False
    ) -> None:
        """Send a wire-format request on the hot path, without the library's conversions.

        The library's ``call()`` turns dataclasses into dicts and renames every key (about
        0.5 ms per meter value); frequent messages are built in wire format instead and their
        shape is checked against the OCPP schemas by the tests. Periodic messages are lost
        here at the ``--drop-rate``.
        """
        if periodic and self._dropped():
            return
        self.counters.messages_sent += 1
        await cp.call_wire(action, payload)

    async def _behave(self, cp: Any, stop: asyncio.Event) -> None:
        calls = cp._call
        while True:
            boot = await self._call(
                cp,
                calls.BootNotification(
                    charging_station={
                        "model": f"SimEVSE-{self.spec.ocpp_version}",
                        "vendor_name": "gridflex",
                        "serial_number": self.spec.station_id,
                        "firmware_version": "1.0",
                    },
                    reason="PowerUp" if self.counters.connects <= 1 else "Unknown",
                ),
            )
            if boot.status == "Accepted":
                self.heartbeat_interval_s = float(boot.interval)
                break
            await asyncio.sleep(max(1.0, float(boot.interval)))
        for evse in self.evses.values():
            await self._status(cp, evse)
        loop_last = self._sim_time_s()
        phase = self.rng.uniform(0.0, self.tx_interval_s)
        for evse in self.evses.values():
            evse.next_meter_s = loop_last + min(phase, self.tx_interval_s)
        next_heartbeat = loop_last + self.heartbeat_interval_s
        while not stop.is_set():
            now = self._sim_time_s()
            self._advance(now - loop_last, now)
            loop_last = now
            await self._events(cp, now)
            for evse in self.evses.values():
                if now >= evse.next_meter_s:
                    await self._send_meter_values(cp, evse)
                    interval = (
                        self.tx_interval_s if evse.transaction_id else self.aligned_interval_s
                    )
                    evse.next_meter_s = next_meter_s(evse.next_meter_s, interval, now)
            if now >= next_heartbeat:
                await self._call(cp, calls.Heartbeat())
                next_heartbeat = now + self.heartbeat_interval_s
            next_meter = min(e.next_meter_s for e in self.evses.values())
            wake = min(next_meter, next_heartbeat, now + 1.0)
            await asyncio.sleep(max(0.0, wake - self._sim_time_s()))

    # -- physics and events

    def _advance(self, dt_s: float, now_s: float) -> None:
        """Step every car over ``dt_s`` (>= 0) under its profile, the station limit, the grid."""
        self.freq_hz = self.frequency.freq_hz(now_s)
        active = [e for e in self.evses.values() if e.ev is not None]
        if not active or dt_s < 0:
            return
        requested = [
            requested_power_w(e.spec.car, e.ev.soc_pct, self.control_of(e.evse_id), self.freq_hz)
            if e.transaction_id is not None and not self.faulted and e.ev is not None
            else 0.0
            for e in active
        ]
        station_max = self.station_max_w()
        for evse, power_w in zip(active, share_station_max(requested, station_max), strict=True):
            assert evse.ev is not None
            evse.ev = step(
                evse.ev,
                evse.spec.car,
                power_w,
                dt_s,
                station_max_charge_w=evse.spec.max_charge_w,
                station_max_discharge_w=evse.spec.max_discharge_w,
                heat_offset_c=OVERTEMP_OFFSET_C if self.spec.faults.overtemp else 0.0,
                thermal=self.thermal,
            )

    async def _events(self, cp: Any, now: float) -> None:
        faults = self.spec.faults
        if faults.hang_after_s is not None and now >= faults.hang_after_s and not self.hung:
            log.info("%s: hanging (no more answers to the CSMS)", self.spec.station_id)
            self.hung = True
        if (
            faults.ground_fault_after_s is not None
            and now >= faults.ground_fault_after_s
            and not self.faulted
        ):
            await self._ground_fault(cp)
        for evse in self.evses.values():
            car = evse.spec.car
            if evse.ev is None and not evse.departed and now >= car.arrival_s and not self.faulted:
                await self._plug_in(cp, evse)
            if (
                evse.ev is not None
                and car.departure_s is not None
                and now >= car.departure_s
                and not evse.departed
            ):
                await self._depart(cp, evse)
            if evse.ev is not None and faults.overtemp:
                temp_c = evse.ev.connector_temp_c
                if evse.reported_temp_c is None or abs(temp_c - evse.reported_temp_c) >= 2.0:
                    evse.reported_temp_c = temp_c
                    await self._notify_event(
                        cp, evse, "Connector", "Temperature", f"{temp_c:.1f}", trigger="Delta"
                    )

    async def _status(self, cp: Any, evse: SimEvse) -> None:
        await self._call(
            cp,
            cp._call.StatusNotification(
                timestamp=ocpp_time(),
                connector_status=evse.connector_status,
                evse_id=evse.evse_id,
                connector_id=1,
            ),
        )

    def transaction_event_request(
        self,
        evse: SimEvse,
        event_type: str,
        trigger: str,
        *,
        stopped_reason: str | None = None,
    ) -> dict[str, Any]:
        """A TransactionEventRequest of one EVSE in wire format, with a meter value."""
        return evse.transaction_event_request(
            event_type,
            trigger,
            measurands=self.measurands,
            version=self.spec.ocpp_version,
            stopped_reason=stopped_reason,
            freq_hz=self.freq_hz,
            control=self.control_of(evse.evse_id),
        )

    async def _plug_in(self, cp: Any, evse: SimEvse) -> None:
        car = evse.spec.car
        evse.plug_in(self.thermal)
        log.info(
            "%s: car plugged in on EVSE %d (V2X %s)", self.spec.station_id, evse.evse_id, car.v2x
        )
        await self._status(cp, evse)
        await self._send_wire(
            cp,
            "TransactionEvent",
            self.transaction_event_request(evse, "Started", "CablePluggedIn"),
        )
        departure = None
        if car.departure_s is not None:
            departure = self._epoch0 + car.departure_s
        ev = evse.ev if evse.ev is not None else initial_state(car, self.thermal)
        needs = charging_needs_payload(car, ev, self.spec.ocpp_version, departure_epoch_s=departure)
        await self._call(
            cp, cp._call.NotifyEVChargingNeeds(charging_needs=needs, evse_id=evse.evse_id)
        )

    async def _end_transaction(self, cp: Any, evse: SimEvse, trigger: str, reason: str) -> None:
        if evse.transaction_id is None:
            return
        event = self.transaction_event_request(evse, "Ended", trigger, stopped_reason=reason)
        await self._send_wire(cp, "TransactionEvent", event)
        evse.end_transaction()

    async def _depart(self, cp: Any, evse: SimEvse) -> None:
        await self._end_transaction(cp, evse, "EVDeparted", "EVDisconnected")
        evse.ev = None
        evse.departed = True
        if not self.faulted:
            evse.connector_status = "Available"
            await self._status(cp, evse)

    async def _ground_fault(self, cp: Any) -> None:
        log.info("%s: ground fault", self.spec.station_id)
        self.faulted = True
        for evse in self.evses.values():
            evse.connector_status = "Faulted"
            await self._status(cp, evse)
            await self._notify_event(
                cp, evse, "EVSE", "Problem", "true", trigger="Alerting", tech_code="GroundFault"
            )
            await self._end_transaction(cp, evse, "AbnormalCondition", "GroundFault")

    async def _notify_event(
        self,
        cp: Any,
        evse: SimEvse,
        component: str,
        variable: str,
        value: str,
        *,
        trigger: str,
        tech_code: str | None = None,
    ) -> None:
        self.event_seq_no += 1
        event: dict[str, Any] = {
            "event_id": self.event_seq_no,
            "timestamp": ocpp_time(),
            "trigger": trigger,
            "actual_value": value,
            "event_notification_type": "HardWiredMonitor",
            "component": {"name": component, "evse": {"id": evse.evse_id, "connector_id": 1}},
            "variable": {"name": variable},
        }
        if tech_code is not None:
            event["tech_code"] = tech_code
        await self._call(
            cp,
            cp._call.NotifyEvent(
                generated_at=ocpp_time(), seq_no=self.event_seq_no - 1, event_data=[event]
            ),
        )

    async def _send_meter_values(self, cp: Any, evse: SimEvse) -> None:
        if evse.transaction_id is not None:
            event = self.transaction_event_request(evse, "Updated", "MeterValuePeriodic")
            await self._send_wire(cp, "TransactionEvent", event, periodic=True)
        else:
            request = evse.meter_values_request(self.measurands, freq_hz=self.freq_hz)
            await self._send_wire(cp, "MeterValues", request, periodic=True)


async def run_fleet(
    specs: list[StationSpec],
    csms_url: str,
    stop: asyncio.Event,
    *,
    ssl_context: ssl.SSLContext | None = None,
    ramp_s: float = 0.0,
    response_timeout_s: float = 30.0,
    grace_s: float = 3.0,
    frequency: FrequencySource | None = None,
    nominal_hz: float = 50.0,
) -> list[SimStation]:
    """Run stations until ``stop`` is set; connections start spread over ``ramp_s``.

    Every station measures the grid frequency of the one ``frequency`` source (nominal
    when None). Returns when every station has ended (refused, or stopped); after ``stop``
    at most ``grace_s`` later.
    """
    stations = [
        SimStation(
            spec,
            csms_url,
            ssl_context=ssl_context,
            response_timeout_s=response_timeout_s,
            frequency=frequency,
            nominal_hz=nominal_hz,
        )
        for spec in specs
    ]

    async def _start(index: int, station: SimStation) -> None:
        if ramp_s > 0 and stations:
            await asyncio.sleep(ramp_s * index / len(stations))
        await station.run(stop)

    tasks = [asyncio.ensure_future(_start(i, s)) for i, s in enumerate(stations)]
    stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    running: set[asyncio.Future[Any]] = set(tasks)
    while running and not stop.is_set():
        done, _ = await asyncio.wait({*running, stopper}, return_when=asyncio.FIRST_COMPLETED)
        running -= done
    stopper.cancel()
    if running:
        # Connected stations close their connection within a second; stations waiting to
        # (re)connect would retry forever, so they are cancelled after a grace period.
        _done, pending = await asyncio.wait(running, timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return stations
