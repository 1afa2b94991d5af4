"""Simulated OCPP 2.0.1 / 2.1 charging stations, each with one EVSE and a car.

``gridflex sim chargers --count M --csms-url URL [--ocpp 2.0.1|2.1|mix]`` starts M stations
built on the ``ocpp`` package's client over ``websockets``. Each station:

- connects to ``{csms-url}/{station_id}`` with the ``ocpp2.1`` or ``ocpp2.0.1`` subprotocol
  and HTTP Basic auth (security profile 1; ``wss://`` plus ``--ca-file`` for profile 2),
  reconnecting with the ``websockets`` client's own backoff;
- sends BootNotification, StatusNotification, Heartbeat; when its car arrives,
  StatusNotification Occupied, TransactionEvent Started and NotifyEVChargingNeeds (departure
  time, energy, V2X limits from an ISO 15118-20 car on an OCPP 2.1 station, AC parameters
  from a charge-only ISO 15118-2 car); then TransactionEvent Updated with meter values every
  ``SampledDataCtrlr.TxUpdatedInterval`` (set by the CSMS with SetVariables), MeterValues
  when idle, TransactionEvent Ended when the car leaves;
- applies SetChargingProfile to the car (``simulators.ev``): a CentralSetpoint ``setpoint``
  within ``limit``/``dischargeLimit``, or a charging ``limit``; power follows within the car's
  limits and the SoC integrates.

Fault injection: ``--overtemp`` (connector heats up, power is derated, temperature reported
with NotifyEvent), ``--ground-fault-after-s`` (StatusNotification Faulted, NotifyEvent
``techCode`` GroundFault, transaction Ended with ``stoppedReason`` GroundFault),
``--drop-rate`` (periodic meter-value messages are lost; their ``seqNo`` is still used, so
the CSMS sees the gap) and ``--hang-after-s`` (the station stops answering the CSMS's calls,
tripping its response timeout).

For the demo, ``build_fleet(count, seed=..., v21_fraction=..., v2x_fraction=...)`` (or
``fleet_from_site``) makes a seeded mix and ``run_fleet(specs, url, stop)`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import itertools
import json
import logging
import math
import random
import ssl
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ocpp.messages import CallError, MessageType
from ocpp.routing import on
from ocpp.v21 import ChargePoint as ChargePoint21
from ocpp.v201 import ChargePoint as ChargePoint201
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gridflex.runtime import stop_on_signals
from simulators.ev import CarSpec, EvState, ThermalSpec, initial_state, make_cars, step

__all__ = [
    "Control",
    "Faults",
    "SimStation",
    "StationSpec",
    "add_arguments",
    "build_fleet",
    "charging_needs_payload",
    "control_from_profile",
    "fleet_from_site",
    "main",
    "next_meter_s",
    "requested_power_w",
    "run_fleet",
    "sampled_values",
]

log = logging.getLogger(__name__)

OcppVersion = Literal["2.0.1", "2.1"]

#: Measurands a station samples until the CSMS sets its own list.
DEFAULT_MEASURANDS = frozenset(
    {"Energy.Active.Import.Register", "Power.Active.Import", "Power.Active.Export", "SoC"}
)
SUPPORTED_MEASURANDS = frozenset(
    {
        "Energy.Active.Import.Register",
        "Energy.Active.Export.Register",
        "Power.Active.Import",
        "Power.Active.Export",
        "Power.Active.Setpoint",
        "SoC",
        "Current.Import",
        "Current.Export",
        "Voltage",
    }
)
VOLTAGE_V = 230.0
PHASES = 3
OVERTEMP_OFFSET_C = 50.0


def _ocpp_time(ts: float | None = None) -> str:
    """RFC 3339 UTC with ``Z`` and milliseconds for an epoch time in seconds (default now)."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class Faults:
    """Fault injection for one station (all off by default)."""

    overtemp: bool = False
    ground_fault_after_s: float | None = None
    drop_rate: float = 0.0
    hang_after_s: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop_rate <= 1.0:
            raise ValueError("drop_rate must be in [0, 1]")


@dataclass(frozen=True)
class StationSpec:
    """One simulated charging station and the car that will use it."""

    station_id: str
    password: str | None
    ocpp_version: OcppVersion
    car: CarSpec
    max_charge_w: float = 22_000.0
    max_discharge_w: float = 11_000.0
    faults: Faults = Faults()
    seed: int = 0


def _versions(count: int, ocpp: str, v21_fraction: float, rng: random.Random) -> list[OcppVersion]:
    if ocpp in ("2.0.1", "2.1"):
        only: OcppVersion = "2.1" if ocpp == "2.1" else "2.0.1"
        return [only] * count
    if not 0.0 <= v21_fraction <= 1.0:
        raise ValueError("v21_fraction must be in [0, 1]")
    n21 = round(count * v21_fraction)
    v21: OcppVersion = "2.1"
    v201: OcppVersion = "2.0.1"
    versions = [v21] * n21 + [v201] * (count - n21)
    rng.shuffle(versions)
    return versions


def build_fleet(
    count: int,
    *,
    seed: int = 1,
    ocpp: Literal["2.0.1", "2.1", "mix"] = "mix",
    v21_fraction: float = 0.5,
    v2x_fraction: float = 0.5,
    id_prefix: str = "sim-cs",
    password: str | None = None,
    arrival_window_s: float = 0.0,
    stay_s: float | None = None,
    faults: Faults = Faults(),
    faulty: int | None = None,
    max_charge_w: float = 22_000.0,
    max_discharge_w: float = 11_000.0,
) -> list[StationSpec]:
    """A seeded fleet: the same arguments always give the same stations and cars.

    ``ocpp="mix"`` makes ``round(count * v21_fraction)`` OCPP 2.1 stations, the rest 2.0.1;
    ``round(count * v2x_fraction)`` cars are V2X-capable. ``faults`` go to the first
    ``faulty`` stations (all when None). Station ids are ``{id_prefix}-{n:04d}`` from 1.
    """
    ids = [f"{id_prefix}-{n:04d}" for n in range(1, count + 1)]
    return _fleet(
        ids,
        [password] * count,
        [(max_charge_w, max_discharge_w)] * count,
        seed=seed,
        ocpp=ocpp,
        v21_fraction=v21_fraction,
        v2x_fraction=v2x_fraction,
        arrival_window_s=arrival_window_s,
        stay_s=stay_s,
        faults=faults,
        faulty=faulty,
    )


def fleet_from_site(
    site_path: Path,
    *,
    count: int | None = None,
    seed: int = 1,
    ocpp: Literal["2.0.1", "2.1", "mix"] = "mix",
    v21_fraction: float = 0.5,
    v2x_fraction: float = 0.5,
    arrival_window_s: float = 0.0,
    stay_s: float | None = None,
    faults: Faults = Faults(),
    faulty: int | None = None,
) -> list[StationSpec]:
    """A fleet for the EVSEs of a site file: their station ids, passwords and power limits."""
    from gridflex.config import load_site

    evses = load_site(site_path).evses[:count]
    return _fleet(
        [e.station for e in evses],
        [e.password for e in evses],
        [(e.max_charge_w, e.max_discharge_w) for e in evses],
        seed=seed,
        ocpp=ocpp,
        v21_fraction=v21_fraction,
        v2x_fraction=v2x_fraction,
        arrival_window_s=arrival_window_s,
        stay_s=stay_s,
        faults=faults,
        faulty=faulty,
    )


def _fleet(
    ids: list[str],
    passwords: list[str | None],
    limits: list[tuple[float, float]],
    *,
    seed: int,
    ocpp: str,
    v21_fraction: float,
    v2x_fraction: float,
    arrival_window_s: float,
    stay_s: float | None,
    faults: Faults,
    faulty: int | None,
) -> list[StationSpec]:
    count = len(ids)
    rng = random.Random(seed)
    versions = _versions(count, ocpp, v21_fraction, rng)
    cars = make_cars(
        count,
        seed=seed + 1,
        v2x_fraction=v2x_fraction,
        arrival_window_s=arrival_window_s,
        stay_s=stay_s,
    )
    specs = []
    for index, (station_id, password, (charge_w, discharge_w), version, car) in enumerate(
        zip(ids, passwords, limits, versions, cars, strict=True)
    ):
        specs.append(
            StationSpec(
                station_id=station_id,
                password=password,
                ocpp_version=version,
                car=car,
                max_charge_w=charge_w,
                max_discharge_w=discharge_w,
                faults=faults if faulty is None or index < faulty else Faults(),
                seed=seed * 100_003 + index,
            )
        )
    return specs


# --------------------------------------------------------------------------- control (pure)


@dataclass(frozen=True)
class Control:
    """The charging profile in force, reduced to what the car has to follow."""

    operation_mode: str
    limit_w: float | None = None
    setpoint_w: float | None = None
    discharge_limit_w: float | None = None


def control_from_profile(profile: dict[str, Any]) -> Control:
    """Read the first period of a charging profile (library snake_case keys) in W.

    Raises ``ValueError`` for a schedule in A (the simulator only takes W) or without periods.
    """
    schedule = profile["charging_schedule"][0]
    if schedule.get("charging_rate_unit") != "W":
        raise ValueError("only chargingRateUnit W is supported")
    periods = schedule["charging_schedule_period"]
    if not periods:
        raise ValueError("the schedule has no period")
    period = periods[0]
    return Control(
        operation_mode=period.get("operation_mode", "ChargingOnly"),
        limit_w=period.get("limit"),
        setpoint_w=period.get("setpoint"),
        discharge_limit_w=period.get("discharge_limit"),
    )


def requested_power_w(car: CarSpec, soc_pct: float, control: Control | None) -> float:
    """The power the car asks for (+ charging) before its physical limits.

    Without a profile the car charges at full power up to its target SoC. A limit caps that.
    A CentralSetpoint is followed as given (also above the target SoC), kept within ``limit``
    and ``dischargeLimit``.
    """
    wants_w = car.max_charge_w if soc_pct < car.target_soc_pct else 0.0
    if control is None:
        return wants_w
    if control.operation_mode == "CentralSetpoint" and control.setpoint_w is not None:
        power_w = control.setpoint_w
        if control.limit_w is not None:
            power_w = min(power_w, control.limit_w)
        if control.discharge_limit_w is not None:
            power_w = max(power_w, control.discharge_limit_w)
        return power_w
    if control.limit_w is not None:
        return min(wants_w, max(0.0, control.limit_w))
    return wants_w


def sampled_values(
    ev: EvState, measurands: frozenset[str], *, setpoint_w: float | None = None
) -> list[dict[str, Any]]:
    """Sampled values (wire format, camelCase) for the measurands the CSMS asked for."""
    power_w = ev.power_w
    current_a = abs(power_w) / (VOLTAGE_V * PHASES)
    table: list[tuple[str, float, str, str | None]] = [
        ("Power.Active.Import", max(0.0, power_w), "W", None),
        ("Power.Active.Export", max(0.0, -power_w), "W", None),
        ("Energy.Active.Import.Register", ev.energy_import_wh, "Wh", None),
        ("Energy.Active.Export.Register", ev.energy_export_wh, "Wh", None),
        ("SoC", ev.soc_pct, "Percent", "EV"),
        ("Current.Import", current_a if power_w > 0 else 0.0, "A", None),
        ("Current.Export", current_a if power_w < 0 else 0.0, "A", None),
        ("Voltage", VOLTAGE_V, "V", None),
    ]
    if setpoint_w is not None:
        table.append(("Power.Active.Setpoint", setpoint_w, "W", None))
    values = []
    for measurand, value, unit, location in table:
        if measurand not in measurands and measurand != "Power.Active.Setpoint":
            continue
        item: dict[str, Any] = {
            "value": round(value, 2),
            "measurand": measurand,
            "unitOfMeasure": {"unit": unit},
        }
        if location is not None:
            item["location"] = location
        values.append(item)
    return values


def charging_needs_payload(
    car: CarSpec, ev: EvState, version: OcppVersion, *, departure_epoch_s: float | None
) -> dict[str, Any]:
    """``chargingNeeds`` (snake_case) of the car: 2.1 V2X parameters, or AC charge-only."""
    energy_wh = max(0.0, (car.target_soc_pct - ev.soc_pct) / 100.0 * car.capacity_wh)
    needs: dict[str, Any] = {}
    if departure_epoch_s is not None:
        needs["departure_time"] = _ocpp_time(departure_epoch_s)
    if version == "2.1" and car.v2x:
        min_v2x_wh = (car.min_soc_pct - ev.soc_pct) / 100.0 * car.capacity_wh
        needs.update(
            requested_energy_transfer="DC_BPT",
            available_energy_transfer=["DC", "DC_BPT"],
            control_mode="DynamicControl",
            dc_charging_parameters={
                "ev_max_current": round(car.max_charge_w / 400.0, 1),
                "ev_max_voltage": 450.0,
                "ev_max_power": car.max_charge_w,
                "ev_energy_capacity": car.capacity_wh,
                "energy_amount": round(energy_wh, 1),
                "state_of_charge": round(ev.soc_pct),
            },
            v2x_charging_parameters={
                "max_charge_power": car.max_charge_w,
                "max_discharge_power": car.max_discharge_w,
                "min_charge_power": 0.0,
                "min_discharge_power": 0.0,
                "ev_target_energy_request": round(energy_wh, 1),
                "ev_min_v2x_energy_request": round(min_v2x_wh, 1),
                "target_soc": round(car.target_soc_pct),
            },
        )
    else:
        needs.update(
            requested_energy_transfer="AC_three_phase",
            # integers: OCPP 2.0.1 types these fields as integer (2.1 as number)
            ac_charging_parameters={
                "energy_amount": round(energy_wh),
                "ev_min_current": 6,
                "ev_max_current": round(car.max_charge_w / (VOLTAGE_V * PHASES)),
                "ev_max_voltage": round(VOLTAGE_V),
            },
        )
    return needs


def next_meter_s(due_s: float, interval_s: float, now_s: float) -> float:
    """When the next periodic meter value is due after the one due at ``due_s``.

    The station keeps its phase: meter values are due at ``due_s + k * interval_s``, and
    slots that went by while it was late are skipped rather than sent in a burst. A station
    that was late does not take a new phase from the moment it caught up: stations made
    late together (a busy simulator process, a stall) would all take nearly the same
    phase and from then on send in a synchronized burst every interval.
    """
    following = due_s + interval_s
    if following <= now_s:
        following += math.ceil((now_s - following) / interval_s + 1e-9) * interval_s
    return following


# --------------------------------------------------------------------------- station


@dataclass
class StationCounters:
    """What one station did."""

    connects: int = 0
    messages_sent: int = 0
    messages_dropped: int = 0
    profiles_received: int = 0
    calls_ignored: int = 0


class _SimHandlers:
    """OCPP handlers of a simulated station (library style: snake_case keyword arguments)."""

    station: SimStation
    _call_result: Any
    _awaiting: tuple[str, asyncio.Future[list[Any]]] | None = None

    @on("SetVariables")
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_kw: Any) -> Any:
        """Apply each variable and answer its status."""
        results = [self.station.set_variable(item) for item in set_variable_data]
        return self._call_result.SetVariables(set_variable_result=results)

    @on("SetChargingProfile")
    def on_set_charging_profile(
        self, evse_id: int, charging_profile: dict[str, Any], **_kw: Any
    ) -> Any:
        """Apply a charging profile to the car."""
        status, reason = self.station.apply_profile(evse_id, charging_profile)
        info = {"reason_code": reason} if reason else None
        return self._call_result.SetChargingProfile(status=status, status_info=info)

    @on("ClearChargingProfile")
    def on_clear_charging_profile(self, **_kw: Any) -> Any:
        """Drop the profile in force: the car falls back to charging at full power."""
        self.station.control = None
        return self._call_result.ClearChargingProfile(status="Accepted")

    async def start(self) -> None:
        """Receive and route frames (the library logs every frame at INFO; here DEBUG)."""
        while True:
            message = await self._connection.recv()  # type: ignore[attr-defined]
            log.debug("%s: received %s", self.station.spec.station_id, message)
            await self.route_message(message)

    async def _send(self, message: str) -> None:
        log.debug("%s: send %s", self.station.spec.station_id, message)
        await self._connection.send(message)  # type: ignore[attr-defined]

    async def call_wire(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a wire-format CALL and return the answer's payload (the hot path).

        One CALL at a time per connection (the library's call lock, as OCPP-J requires).
        The answer is matched by its message id in ``route_message`` and handed over in a
        future: the library's response queue costs a task per call (``wait_for``), and its
        ``Call.to_json`` a new JSON encoder per frame.
        """
        unique_id = self._unique_id_generator()  # type: ignore[attr-defined]
        frame = _JSON.encode([MessageType.Call, unique_id, action, payload])
        async with self._call_lock:  # type: ignore[attr-defined]
            answer: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._awaiting = (unique_id, answer)
            try:
                await self._send(frame)
                async with asyncio.timeout(self._response_timeout):  # type: ignore[attr-defined]
                    response = await answer
            finally:
                self._awaiting = None
        if response[0] == MessageType.CallError:
            raise CallError(*response[1:]).to_exception()
        result: dict[str, Any] = response[2]
        return result

    async def route_message(self, raw_msg: str) -> None:
        """Hand the answer to ``call_wire``'s CALL over; ignore CALLs while hung; else route.

        Everything else is routed as the library does (its handlers, its response queue for
        the CALLs sent with ``call()``).
        """
        awaiting = self._awaiting
        if awaiting is not None and raw_msg.lstrip()[1:2] in ("3", "4"):
            frame = _answer_frame(raw_msg, awaiting[0])
            if frame is not None:
                if not awaiting[1].done():
                    awaiting[1].set_result(frame)
                return
        if self.station.hung and raw_msg.lstrip().startswith("[2"):
            self.station.counters.calls_ignored += 1
            return
        await super().route_message(raw_msg)  # type: ignore[misc]


_JSON = json.JSONEncoder(separators=(",", ":"))
"""OCPP-J frames as the library writes them (compact, ASCII), without a new encoder each."""


def _answer_frame(raw_msg: str, unique_id: str) -> list[Any] | None:
    """The CALLRESULT or CALLERROR frame (a list) answering ``unique_id``, else None."""
    try:
        frame = json.loads(raw_msg)
    except ValueError:
        return None
    if not isinstance(frame, list) or len(frame) < 3 or frame[1] != unique_id:
        return None
    if frame[0] == MessageType.CallResult and len(frame) == 3 and isinstance(frame[2], dict):
        return frame
    if frame[0] == MessageType.CallError and len(frame) == 5:
        return frame
    return None


class _SimChargePoint201(_SimHandlers, ChargePoint201):
    pass


class _SimChargePoint21(_SimHandlers, ChargePoint21):
    pass


class SimStation:
    """One simulated station: connection, OCPP behaviour and the car model."""

    def __init__(
        self,
        spec: StationSpec,
        csms_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        response_timeout_s: float = 30.0,
        thermal: ThermalSpec | None = None,
    ) -> None:
        self.spec = spec
        self.url = f"{csms_url.rstrip('/')}/{spec.station_id}"
        self.ssl_context = ssl_context
        self.response_timeout_s = response_timeout_s
        self.thermal = thermal or ThermalSpec()
        self.counters = StationCounters()
        self.rng = random.Random(spec.seed)
        # OCPP device model, as set by the CSMS
        self.tx_interval_s = 10.0
        self.aligned_interval_s = 60.0
        self.measurands = DEFAULT_MEASURANDS
        self.heartbeat_interval_s = 300.0
        # station and car
        self.ev: EvState | None = None
        self.meter_import_wh = 1_000_000.0 * self.rng.random()
        self.meter_export_wh = 0.0
        self.control: Control | None = None
        self.received_profiles: list[dict[str, Any]] = []
        self.transaction_id: str | None = None
        self.tx_seq_no = 0
        self.event_seq_no = 0
        self.connector_status = "Available"
        self.faulted = False
        self.hung = False
        self.departed = False
        self.reported_temp_c: float | None = None
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

    def apply_profile(self, evse_id: int, profile: dict[str, Any]) -> tuple[str, str | None]:
        """Apply a SetChargingProfile request; (status, reason code)."""
        self.counters.profiles_received += 1
        self.received_profiles.append(profile)
        if evse_id != 1:
            return "Rejected", "UnknownEVSE"
        if profile.get("charging_profile_purpose") != "TxProfile":
            return "Rejected", "UnsupportedPurpose"
        if self.transaction_id is None or profile.get("transaction_id") != self.transaction_id:
            return "Rejected", "TxNotFound"
        try:
            control = control_from_profile(profile)
        except (ValueError, KeyError, IndexError):
            return "Rejected", "InvalidSchedule"
        if self.spec.ocpp_version == "2.0.1" and (control.limit_w or 0.0) < 0:
            return "Rejected", "InvalidValue"
        self.control = control
        return "Accepted", None

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
        cls = _SimChargePoint21 if self.spec.ocpp_version == "2.1" else _SimChargePoint201
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
        await self._status(cp)
        loop_last = self._sim_time_s()
        phase = self.rng.uniform(0.0, self.tx_interval_s)
        next_meter = loop_last + min(phase, self.tx_interval_s)
        next_heartbeat = loop_last + self.heartbeat_interval_s
        while not stop.is_set():
            now = self._sim_time_s()
            self._advance(now - loop_last)
            loop_last = now
            await self._events(cp, now)
            if now >= next_meter:
                await self._send_meter_values(cp)
                interval = self.tx_interval_s if self.transaction_id else self.aligned_interval_s
                next_meter = next_meter_s(next_meter, interval, now)
            if now >= next_heartbeat:
                await self._call(cp, calls.Heartbeat())
                next_heartbeat = now + self.heartbeat_interval_s
            wake = min(next_meter, next_heartbeat, now + 1.0)
            await asyncio.sleep(max(0.0, wake - self._sim_time_s()))

    # -- physics and events

    def _advance(self, dt_s: float) -> None:
        if self.ev is None or dt_s <= 0:
            return
        requested = 0.0
        if self.transaction_id is not None and not self.faulted:
            requested = requested_power_w(self.spec.car, self.ev.soc_pct, self.control)
        self.ev = step(
            self.ev,
            self.spec.car,
            requested,
            dt_s,
            station_max_charge_w=self.spec.max_charge_w,
            station_max_discharge_w=self.spec.max_discharge_w,
            heat_offset_c=OVERTEMP_OFFSET_C if self.spec.faults.overtemp else 0.0,
            thermal=self.thermal,
        )

    async def _events(self, cp: Any, now: float) -> None:
        car, faults = self.spec.car, self.spec.faults
        if faults.hang_after_s is not None and now >= faults.hang_after_s and not self.hung:
            log.info("%s: hanging (no more answers to the CSMS)", self.spec.station_id)
            self.hung = True
        if (
            faults.ground_fault_after_s is not None
            and now >= faults.ground_fault_after_s
            and not self.faulted
        ):
            await self._ground_fault(cp)
        if self.ev is None and not self.departed and now >= car.arrival_s and not self.faulted:
            await self._plug_in(cp)
        if (
            self.ev is not None
            and car.departure_s is not None
            and now >= car.departure_s
            and not self.departed
        ):
            await self._depart(cp)
        if self.ev is not None and faults.overtemp:
            temp_c = self.ev.connector_temp_c
            if self.reported_temp_c is None or abs(temp_c - self.reported_temp_c) >= 2.0:
                self.reported_temp_c = temp_c
                await self._notify_event(
                    cp, "Connector", "Temperature", f"{temp_c:.1f}", trigger="Delta"
                )

    async def _status(self, cp: Any) -> None:
        await self._call(
            cp,
            cp._call.StatusNotification(
                timestamp=_ocpp_time(),
                connector_status=self.connector_status,
                evse_id=1,
                connector_id=1,
            ),
        )

    def transaction_event_request(
        self, event_type: str, trigger: str, *, stopped_reason: str | None = None
    ) -> dict[str, Any]:
        """A TransactionEventRequest in wire format (camelCase), with a meter value."""
        self.tx_seq_no += 1
        now = _ocpp_time()
        info: dict[str, Any] = {"transactionId": self.transaction_id}
        if self.ev is not None and event_type != "Ended":
            info["chargingState"] = "Charging" if self.ev.power_w != 0 else "SuspendedEV"
        if stopped_reason is not None:
            info["stoppedReason"] = stopped_reason
        payload: dict[str, Any] = {
            "eventType": event_type,
            "timestamp": now,
            "triggerReason": trigger,
            "seqNo": self.tx_seq_no,
            "transactionInfo": info,
            "evse": {"id": 1, "connectorId": 1},
        }
        if self.ev is not None:
            setpoint = None
            if self.spec.ocpp_version == "2.1" and self.control is not None:
                setpoint = self.control.setpoint_w
            values = sampled_values(self.ev, self.measurands, setpoint_w=setpoint)
            payload["meterValue"] = [{"timestamp": now, "sampledValue": values}]
        return payload

    def plug_in(self) -> None:
        """The car arrives: a new transaction starts (state only; no message sent)."""
        self.ev = replace(
            initial_state(self.spec.car, self.thermal),
            energy_import_wh=self.meter_import_wh,
            energy_export_wh=self.meter_export_wh,
        )
        self.transaction_id = uuid.uuid4().hex[:16]
        self.tx_seq_no = -1
        self.control = None
        self.connector_status = "Occupied"

    async def _plug_in(self, cp: Any) -> None:
        car = self.spec.car
        self.plug_in()
        log.info("%s: car plugged in (V2X %s)", self.spec.station_id, car.v2x)
        await self._status(cp)
        await self._send_wire(
            cp, "TransactionEvent", self.transaction_event_request("Started", "CablePluggedIn")
        )
        departure = None
        if car.departure_s is not None:
            departure = self._epoch0 + car.departure_s
        ev = self.ev if self.ev is not None else initial_state(car, self.thermal)
        needs = charging_needs_payload(car, ev, self.spec.ocpp_version, departure_epoch_s=departure)
        await self._call(cp, cp._call.NotifyEVChargingNeeds(charging_needs=needs, evse_id=1))

    async def _end_transaction(self, cp: Any, trigger: str, reason: str) -> None:
        if self.transaction_id is None:
            return
        event = self.transaction_event_request("Ended", trigger, stopped_reason=reason)
        await self._send_wire(cp, "TransactionEvent", event)
        self.transaction_id = None
        self.control = None
        if self.ev is not None:
            self.meter_import_wh = self.ev.energy_import_wh
            self.meter_export_wh = self.ev.energy_export_wh
            self.ev = replace(self.ev, power_w=0.0)

    async def _depart(self, cp: Any) -> None:
        await self._end_transaction(cp, "EVDeparted", "EVDisconnected")
        self.ev = None
        self.departed = True
        if not self.faulted:
            self.connector_status = "Available"
            await self._status(cp)

    async def _ground_fault(self, cp: Any) -> None:
        log.info("%s: ground fault", self.spec.station_id)
        self.faulted = True
        self.connector_status = "Faulted"
        await self._status(cp)
        await self._notify_event(
            cp, "EVSE", "Problem", "true", trigger="Alerting", tech_code="GroundFault"
        )
        await self._end_transaction(cp, "AbnormalCondition", "GroundFault")

    async def _notify_event(
        self,
        cp: Any,
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
            "timestamp": _ocpp_time(),
            "trigger": trigger,
            "actual_value": value,
            "event_notification_type": "HardWiredMonitor",
            "component": {"name": component, "evse": {"id": 1, "connector_id": 1}},
            "variable": {"name": variable},
        }
        if tech_code is not None:
            event["tech_code"] = tech_code
        await self._call(
            cp,
            cp._call.NotifyEvent(
                generated_at=_ocpp_time(), seq_no=self.event_seq_no - 1, event_data=[event]
            ),
        )

    def meter_values_request(self) -> dict[str, Any]:
        """A MeterValuesRequest in wire format for an idle station (registers, no SoC)."""
        ev = self.ev or EvState(
            soc_pct=0.0,
            energy_import_wh=self.meter_import_wh,
            energy_export_wh=self.meter_export_wh,
        )
        values = [
            v for v in sampled_values(ev, self.measurands) if v["measurand"] != "SoC" or self.ev
        ]
        return {"evseId": 1, "meterValue": [{"timestamp": _ocpp_time(), "sampledValue": values}]}

    async def _send_meter_values(self, cp: Any) -> None:
        if self.transaction_id is not None:
            event = self.transaction_event_request("Updated", "MeterValuePeriodic")
            await self._send_wire(cp, "TransactionEvent", event, periodic=True)
        else:
            await self._send_wire(cp, "MeterValues", self.meter_values_request(), periodic=True)


async def run_fleet(
    specs: list[StationSpec],
    csms_url: str,
    stop: asyncio.Event,
    *,
    ssl_context: ssl.SSLContext | None = None,
    ramp_s: float = 0.0,
    response_timeout_s: float = 30.0,
    grace_s: float = 3.0,
) -> list[SimStation]:
    """Run stations until ``stop`` is set; connections start spread over ``ramp_s``.

    Returns when every station has ended (refused, or stopped); after ``stop`` at most
    ``grace_s`` later.
    """
    stations = [
        SimStation(spec, csms_url, ssl_context=ssl_context, response_timeout_s=response_timeout_s)
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


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gridflex sim chargers``."""
    parser.add_argument("--count", type=int, help="number of stations (default: all in --site)")
    parser.add_argument(
        "--csms-url", required=True, help="CSMS base URL, e.g. ws://127.0.0.1:9000/ocpp"
    )
    parser.add_argument("--ocpp", choices=("2.0.1", "2.1", "mix"), default="mix")
    parser.add_argument("--v21-fraction", type=float, default=0.5, help="with --ocpp mix")
    parser.add_argument("--v2x-fraction", type=float, default=0.5, help="V2X-capable cars")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--site", type=Path, help="take station ids/passwords from this site")
    parser.add_argument("--id-prefix", default="sim-cs", help="station ids without --site")
    parser.add_argument("--password", help="HTTP Basic password of every station (no --site)")
    parser.add_argument("--ca-file", type=Path, help="CA certificate to verify a wss:// CSMS")
    parser.add_argument("--arrival-window-s", type=float, default=0.0)
    parser.add_argument("--stay-s", type=float, help="mean stay of a car (default: forever)")
    parser.add_argument("--ramp-s", type=float, default=0.0, help="spread the connects")
    parser.add_argument("--overtemp", action="store_true", help="inject connector overheating")
    parser.add_argument("--ground-fault-after-s", type=float, help="inject a ground fault")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="lose meter values")
    parser.add_argument("--hang-after-s", type=float, help="stop answering the CSMS")
    parser.add_argument("--faulty", type=int, help="faults only on the first N stations")


def _specs_from_args(args: argparse.Namespace) -> list[StationSpec]:
    faults = Faults(
        overtemp=args.overtemp,
        ground_fault_after_s=args.ground_fault_after_s,
        drop_rate=args.drop_rate,
        hang_after_s=args.hang_after_s,
    )
    common: dict[str, Any] = {
        "seed": args.seed,
        "ocpp": args.ocpp,
        "v21_fraction": args.v21_fraction,
        "v2x_fraction": args.v2x_fraction,
        "arrival_window_s": args.arrival_window_s,
        "stay_s": args.stay_s,
        "faults": faults,
        "faulty": args.faulty,
    }
    if args.site is not None:
        return fleet_from_site(args.site, count=args.count, **common)
    if args.count is None:
        raise SystemExit("gridflex sim chargers: give --count (or --site)")
    return build_fleet(args.count, id_prefix=args.id_prefix, password=args.password, **common)


_FREEZE_AFTER_RAMP_S = 15.0


def main(args: argparse.Namespace) -> int:
    """Run the simulated stations until SIGINT/SIGTERM; exit 0.

    What start-up built, and later the stations' connections, are frozen out of the garbage
    collector's way (``gc.freeze``): a full collection walks every station's objects and
    pauses the process, and the stations due meanwhile then send together, in one burst.
    """
    specs = _specs_from_args(args)
    ssl_context = None
    if args.csms_url.startswith("wss://"):
        ssl_context = ssl.create_default_context(cafile=args.ca_file)
    n21 = sum(s.ocpp_version == "2.1" for s in specs)
    n_v2x = sum(s.car.v2x for s in specs)
    log.info(
        "%d simulated stations (%d OCPP 2.1, %d V2X cars) -> %s",
        len(specs),
        n21,
        n_v2x,
        args.csms_url,
    )

    async def _main() -> list[SimStation]:
        stop = stop_on_signals()
        loop = asyncio.get_running_loop()
        gc.freeze()
        freezer = loop.call_later(args.ramp_s + _FREEZE_AFTER_RAMP_S, gc.freeze)
        try:
            return await run_fleet(
                specs, args.csms_url, stop, ssl_context=ssl_context, ramp_s=args.ramp_s
            )
        finally:
            freezer.cancel()

    stations = asyncio.run(_main())
    sent = sum(s.counters.messages_sent for s in stations)
    dropped = sum(s.counters.messages_dropped for s in stations)
    log.info("simulated stations stopped: %d messages sent, %d dropped", sent, dropped)
    return 0
