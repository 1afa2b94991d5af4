"""The control service: dispatch commands from MQTT to the devices, one ack per command.

``gridflex control`` runs :class:`ControlService` on one event loop:

- one :class:`~gridflex.mqtt_asyncio.AsyncMqttClient` (persistent session
  ``gridflex-control-{site}``) subscribed to the site's commands (QoS 1), telemetry (QoS 0)
  and asset statuses (retained). A command that is not a valid ``command/1`` for a known
  asset of this site goes to the dead letter topic ``gridflex/v1/deadletter/control`` with
  the reason, and the service goes on; so do statuses, CSMS results and presences, and the
  readings it uses, that it cannot parse or that are outside the contract
  (``control.inbound``);
- per asset a bounded mailbox and one worker task (``control.jobs``): the commands of one
  asset are applied one at a time in arrival order (the ledger's check-then-record relies
  on it), while assets proceed in parallel. Beyond ``[control] queue_limit`` waiting
  commands the oldest is dropped and acked ``stale``: setpoints are absolute, the newer
  one supersedes it;
- every command goes through :func:`control.writer.apply_command` (ledger, clamp, write,
  read-back) and its ack is published on ``gridflex/v1/{site}/dispatch/{asset}/ack``.

The clamp's inputs at the moment a command is applied (``control.live``):

- ratings, SoC stop points and ``ramp_w_per_s`` of the asset from the site file, narrowed
  by the charge profile in force (REST API);
- the SoC of the latest fresh reading (``[control] telemetry_max_age_s``), else model 713
  read from the inverter; unknown means no discharge (rule ``soc_unknown``);
- the thermal derating from the reading's connector temperature;
- the site's headroom: ``[site] max_import_w``/``max_export_w`` minus the other assets'
  measured power (beyond it: ``rejected``, ``max capacity reached``);
- the latched faults (``control.faults``): a fault seen in a reading or a status forces an
  emergency stop (0 W written at once, ahead of any waiting command) and every later
  command is written as 0 W (rule ``fault``) until an operator clears it.

Charging stations (``kind = "evse"``): per EVSE an :class:`~control.ocpp.OcppDevice`, written
through the CSMS process over MQTT (one shared :class:`~control.ocpp.CsmsClient`, see
``control.ocpp``) with the command's ``command_id`` as correlation id; the ack carries the
station's next meter value as ``measured_w`` and its latencies run to the station's answer.

Fail-safe: every write restarts the device's own reversion timer (``revert_s`` = ``max(2
x dispatch.refresh_s, 10)`` s) so a dead writer leaves devices at their default; and a
watchdog puts an asset back to its ``default_setpoint_w`` when no command came for
``watchdog_s`` (``[control] watchdog_s``, default ``revert_s``; checked by one sweep every
``min(watchdog_s / 4, 1)`` s), for a pipeline that went silent while the writer runs.

The REST API (``control.api``) reaches the service through the methods under "operator":
manual commands (through the same ledger and clamp; they override automatic dispatch for
that asset until they expire or are cancelled), clearing faults, the live view of an asset
and a stream of what passes through.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from control.clamp import UNLIMITED_SITE, Limits
from control.devices import LazySunSpecDevice, describe_error
from control.droop import LocalDroopSupervisor, droop_params_of
from control.faults import FaultLatch, faults_in_status, faults_in_telemetry
from control.inbound import Refused, check_status, reading_refusal
from control.jobs import AssetControl, AssetJobs
from control.ledger import APPLIED_RESULTS, Ledger
from control.live import LiveState, ProfileLimits, limits_for
from control.mailbox import Job, Mailbox
from control.modbus_client import OpenRegisterClient, open_client
from control.ocpp import CsmsClient, OcppDevice
from control.writer import PreviousSetpoint, SetpointDevice, apply_command, make_ack
from gridflex import events
from gridflex.config import EvseAsset, InverterAsset, SiteConfig
from gridflex.contract import (
    DEAD_LETTER_LIMIT,
    PREFIX,
    ContractError,
    DeadLetter,
    DispatchAck,
    DispatchCommand,
    ack_topic,
    deadletter_topic,
    parse_payload,
    telemetry_topic,
)
from gridflex.metrics import Buckets
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.runtime import cancel_and_wait

__all__ = [
    "COMPONENT",
    "ControlService",
    "ProfileSource",
    "command_filter",
    "default_ledger_path",
    "revert_s_of",
]

log = logging.getLogger(__name__)

COMPONENT = "control"
#: How often the service looks for newly connected devices to freeze for the GC, s.
GC_FREEZE_CHECK_S = 10.0
#: How often the ledger forgets command ids older than ``[control] retention_days``.
PRUNE_INTERVAL_S = 3600.0


def _unfit(command: DispatchCommand) -> list[str]:
    """The numbers of ``command`` its ack, the ledger or the history could not carry.

    pydantic reads ``NaN``, ``Infinity`` and ``1e400`` into a float, and any integer into
    an int; acks, the ledger (SQLite) and the history (Arrow) hold finite doubles and
    64-bit integers.
    """
    unfit = []
    for name, value in command.__dict__.items():
        if isinstance(value, float) and not math.isfinite(value):
            unfit.append(f"{name}: not a finite number")
        elif isinstance(value, int) and not -(2**63) <= value < 2**63:
            unfit.append(f"{name}: beyond a 64-bit integer")
    return unfit


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def command_filter(site_id: str) -> str:
    """``gridflex/v1/{site}/dispatch/+/command``: the commands of every asset of the site."""
    return f"{PREFIX}/{site_id}/dispatch/+/command"


def default_ledger_path(site: SiteConfig) -> Path:
    """``{history.dir}/control/ledger.sqlite3``."""
    return site.history.dir / "control" / "ledger.sqlite3"


def revert_s_of(site: SiteConfig) -> int:
    """The devices' reversion time: ``max(2 x dispatch.refresh_s, 10)`` s, whole seconds."""
    return max(math.ceil(2 * site.dispatch.refresh_s), 10)


class ProfileSource(Protocol):
    """Where the charge profiles in force come from (``control.profiles.ProfileStore``)."""

    def active(self, asset: str, now_ms: int) -> ProfileLimits | None:
        """The limits of the profiles in force for ``asset`` at ``now_ms``, None if none."""


class ControlService(AssetJobs):
    """Commands in from MQTT, acks out, one worker per asset (see the module docstring)."""

    def __init__(
        self,
        site: SiteConfig,
        ledger: Ledger,
        mqtt: AsyncMqttClient,
        *,
        faults: FaultLatch | None = None,
        profiles: ProfileSource | None = None,
        now_ms: Callable[[], int] = _now_ms,
        watchdog_s: float | None = None,
        open_modbus: OpenRegisterClient = open_client,
    ) -> None:
        self.site = site
        self.ledger = ledger
        self.mqtt = mqtt
        self.faults = faults if faults is not None else FaultLatch(":memory:")
        self.profiles = profiles
        self.now_ms = now_ms
        self.revert_s = revert_s_of(site)
        cfg = site.control
        #: No command for this long: the asset goes back to its default setpoint.
        self.watchdog_s = float(
            watchdog_s if watchdog_s is not None else cfg.watchdog_s or self.revert_s
        )
        self.live = LiveState(
            max_age_ms=round(cfg.telemetry_max_age_s * 1000), on_unreadable=self._unreadable
        )
        self.assets: dict[str, InverterAsset | EvseAsset] = {a.id: a for a in site.assets}
        self.devices: dict[str, SetpointDevice] = {}
        self.sunspec: dict[str, LazySunSpecDevice] = {}
        for inverter in site.inverters:
            device = LazySunSpecDevice(
                inverter,
                revert_s=self.revert_s,
                timeout_s=site.modbus.timeout_s,
                open_modbus=open_modbus,
            )
            self.sunspec[inverter.id] = device
            self.devices[inverter.id] = device
        self.csms = CsmsClient.from_site(mqtt, site, now_ms=now_ms, on_refused=self._refuse)
        self.ocpp: dict[str, OcppDevice] = {}
        for evse in site.evses:
            station = OcppDevice(
                evse, self.csms, hold_s=self.revert_s, nominal_hz=site.nominal_frequency_hz
            )
            self.ocpp[evse.id] = station
            self.devices[evse.id] = station
        self.control: dict[str, AssetControl] = {
            a: AssetControl(Mailbox(cfg.queue_limit)) for a in self.assets
        }
        self.tasks: list[asyncio.Task[None]] = []
        self.dead_letters = 0
        #: Dead letters by reason kind (the metrics' ``reason`` label).
        self.dead_letter_kinds: Counter[str] = Counter()
        #: Commands received over MQTT (valid or not).
        self.commands = 0
        #: Ack latency from the command's ``issued_ms``, s (applied commands that have one).
        self.ack_latency = Buckets()
        self.acks = 0
        self.watchdog_trips = 0
        self.results: Counter[str] = Counter()
        #: Called with ``(topic, payload)`` of every reading, command and ack passing
        #: through (the REST API's live stream).
        self.taps: list[Callable[[str, bytes], None]] = []
        self.droop: LocalDroopSupervisor | None = None
        self.started_ms: int | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start one worker per asset and subscribe (MQTT must be started)."""
        self.started_ms = self.now_ms()
        for asset_id, control in self.control.items():
            self.tasks.append(
                asyncio.create_task(self._worker(asset_id, control), name=f"control-{asset_id}")
            )
        self.tasks.append(asyncio.create_task(self._prune_loop(), name="control-prune"))
        self.tasks.append(asyncio.create_task(self._watchdog_loop(), name="control-watchdog"))
        self.tasks.append(asyncio.create_task(self._freeze_loop(), name="control-gc"))
        if self.site.evses:
            self.csms.start()
        site = self.site.id
        self.mqtt.subscribe(f"{PREFIX}/{site}/+/+/telemetry", self._on_telemetry, qos=0)
        self.mqtt.subscribe(f"{PREFIX}/{site}/+/+/status", self._on_status, qos=1)
        self.mqtt.subscribe(command_filter(site), self._on_command, qos=1)
        if self.site.dispatch.local_droop:
            # stations get the curve with every setpoint (a LocalFrequency profile whose
            # baseline is the setpoint); inverters keep it in 711, supervised
            for asset_id, station in self.ocpp.items():
                station.local_droop = droop_params_of(self.site.dispatch, self.assets[asset_id])
            self.droop = LocalDroopSupervisor.for_site(
                self.site.dispatch, self.assets, self.sunspec
            )
            await self.droop.start()
        for asset_id in self.assets:  # faults latched before a restart stop again
            if self.faults.latched(asset_id):
                self._queue_stop(asset_id, "faults latched before the restart")
        log.info(
            "control: %d assets (%d inverters), revert_s %d, watchdog %.0f s, subscribed to %s",
            len(self.assets),
            len(self.sunspec),
            self.revert_s,
            self.watchdog_s,
            command_filter(site),
        )

    async def stop(self) -> None:
        """Cancel the workers (a command being applied is abandoned) and drop connections."""
        if self.droop is not None:
            await self.droop.stop()
        await cancel_and_wait(self.tasks, log)
        self.tasks.clear()
        for device in self.sunspec.values():
            device.drop()

    async def run(self, stop: asyncio.Event) -> None:
        """Start, wait for ``stop``, stop."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def _freeze_loop(self) -> None:
        """Freeze what start-up and each wave of device connections built (``gc.freeze``).

        A full collection otherwise walks every long-lived object (1,000 devices' clients,
        plans and tables) and pauses the loop for tens of ms, in the middle of a burst of
        commands. Checked every 10 s: after start-up, and whenever more devices connected.
        """
        frozen_at = -1
        while True:
            connected = sum(1 for d in self.sunspec.values() if d.connected)
            if connected != frozen_at:
                if frozen_at < 0:
                    gc.collect()  # once, before the first freeze: no pause in a burst later
                gc.freeze()
                frozen_at = connected
                log.debug("control: %d objects frozen for the GC", gc.get_freeze_count())
            await asyncio.sleep(GC_FREEZE_CHECK_S)

    async def _prune_loop(self) -> None:
        retention_ms = round(self.site.control.retention_days * 86_400_000)
        while True:
            removed = await asyncio.to_thread(self.ledger.prune, self.now_ms(), retention_ms)
            if removed:
                log.info("control: ledger pruned %d command ids", removed)
            await asyncio.sleep(PRUNE_INTERVAL_S)

    # ------------------------------------------------------------------ input

    def _on_telemetry(self, topic: str, payload: bytes) -> None:
        # gridflex/v1/{site}/{kind}/{asset}/telemetry; parsed only when needed (LiveState)
        # or when it may show a fault (a cheap byte search first)
        parts = topic.split("/")
        if len(parts) != 6 or parts[4] not in self.assets:
            return
        asset = parts[4]
        self.live.offer(asset, payload)
        if b"fault" in payload:
            reading = self.live.reading(asset)
            if reading is not None:
                codes = faults_in_telemetry(reading.status, reading.device_status)
                if codes:
                    self._latch(asset, codes, "telemetry", None)
        self._tap(topic, payload)

    def _on_status(self, topic: str, payload: bytes) -> None:
        status = check_status(topic, payload, site_id=self.site.id, assets=self.assets)
        if status is None:  # a retained status cleared, or a collector's presence
            return
        if isinstance(status, Refused):
            self._refuse(topic, payload, status)
            return
        codes = faults_in_status(status, lost_after_failures=self.site.control.lost_after_failures)
        if codes:
            self._latch(status.asset, codes, "status", status.reason)

    def _on_command(self, topic: str, payload: bytes) -> None:
        self.commands += 1
        message: object
        try:  # the common case in one pass; anything else gets parse_payload's reason
            message = DispatchCommand.model_validate_json(payload)
            if "schema_" not in message.model_fields_set:  # no "schema": not a command/1
                raise ValueError("no schema")
        except (ValidationError, ValueError):
            try:
                message = parse_payload(payload)
            except ContractError as exc:
                self._dead_letter(topic, payload, str(exc), kind="malformed")
                return
        if not isinstance(message, DispatchCommand):
            reason = f"expected command/1, got {type(message).__name__}"
            self._dead_letter(topic, payload, reason, kind="not_a_command")
            return
        # the subscription's filter is gridflex/v1/{site}/dispatch/+/command: the asset is
        # the fifth level (the command's own asset id is validated)
        parts = topic.split("/")
        topic_asset = parts[4] if len(parts) == 6 else None
        if unfit := _unfit(message):
            self._dead_letter(topic, payload, "; ".join(unfit), kind="out_of_range")
        elif message.site != self.site.id:
            reason = f"command for site {message.site!r}, not this one"
            self._dead_letter(topic, payload, reason, kind="wrong_site")
        elif message.asset != topic_asset:
            reason = f"asset {message.asset!r} does not match the topic"
            self._dead_letter(topic, payload, reason, kind="topic_mismatch")
        elif message.asset not in self.control:
            self._dead_letter(
                topic, payload, f"unknown asset {message.asset!r}", kind="unknown_asset"
            )
        else:
            self._tap(topic, payload)
            self._enqueue(Job("command", message))

    def _enqueue(self, job: Job) -> None:
        assert job.command is not None
        dropped = self.control[job.command.asset].mailbox.put(job)
        if dropped is not None and dropped.command is not None:
            ack = make_ack(
                dropped.command,
                "stale",
                reason=f"superseded: more than {self.site.control.queue_limit} commands waited",
                ts_ms=self.now_ms(),
            )
            self._publish_ack(dropped.command.asset, ack)

    def _tap(self, topic: str, payload: bytes) -> None:
        for tap in self.taps:
            tap(topic, payload)

    def _refuse(self, topic: str, payload: bytes, refused: Refused) -> None:
        self._dead_letter(topic, payload, refused.reason, kind=refused.kind)

    def _unreadable(self, asset_id: str, payload: bytes) -> None:
        topic = telemetry_topic(self.site.id, self.assets[asset_id].kind, asset_id)
        self._refuse(topic, payload, reading_refusal(asset_id, payload))

    def _dead_letter(self, topic: str, payload: bytes, reason: str, *, kind: str) -> None:
        self.dead_letters += 1
        self.dead_letter_kinds[kind] += 1
        if self.dead_letter_kinds[kind] == 1:  # logged once per kind, as the pipeline does
            log.warning(
                "control: refused a message (%s) on %.200s: %s; further refusals of this kind "
                "are counted and logged at debug level",
                kind,
                topic,
                reason,
            )
        else:
            log.debug("control: refused a message (%s) on %.200s: %s", kind, topic, reason)
        letter = DeadLetter.of(
            payload,
            site=self.site.id,
            component=COMPONENT,
            ts_ms=self.now_ms(),
            reason=reason,
            topic=topic,
            limit=DEAD_LETTER_LIMIT,
        )
        self.mqtt.publish(deadletter_topic(COMPONENT), letter.to_json(), qos=1)

    # ------------------------------------------------------------------ faults

    def _latch(self, asset_id: str, codes: list[str], source: str, detail: str | None) -> None:
        new = self.faults.latch(asset_id, codes, source=source, detail=detail, now_ms=self.now_ms())
        if new:
            for f in new:
                msg = "%s: fault latched (%s): %s; emergency stop"
                events.report(log, asset_id, f.code, msg, asset_id, source, detail=f.describe())
            self._queue_stop(asset_id, ", ".join(f.describe() for f in new))

    def _queue_stop(self, asset_id: str, reason: str) -> None:
        self.control[asset_id].mailbox.put_front(Job("stop"))
        self.control[asset_id].estop = {"reason": reason, "queued_ms": self.now_ms()}

    # ------------------------------------------------------------------ acks

    def _publish_ack(self, asset_id: str, ack: DispatchAck) -> None:
        self.acks += 1
        self.results[ack.result] += 1
        if ack.latency_from_issued_ms is not None:
            self.ack_latency.observe(max(0, ack.latency_from_issued_ms) / 1000.0)
        control = self.control[asset_id]
        control.acks[ack.result] += 1
        control.last_ack = ack
        topic = ack_topic(self.site.id, asset_id)
        payload = ack.to_json()
        self.mqtt.publish(topic, payload, qos=1)
        self._tap(topic, payload)

    def limits_now(self, asset_id: str, now_ms: int) -> Limits:
        """The limits the clamp uses for ``asset_id`` at ``now_ms`` (``control.live``)."""
        profile = None if self.profiles is None else self.profiles.active(asset_id, now_ms)
        asset = self.assets[asset_id]
        return limits_for(asset, derate=self.live.derate(asset_id, now_ms), profile=profile)

    def override(self, asset_id: str, now_ms: int) -> str | None:
        """Why automatic commands are refused for ``asset_id`` now (a manual override)."""
        control = self.control[asset_id]
        if control.manual_until_ms is None:
            return None
        if now_ms > control.manual_until_ms:
            control.manual_until_ms = control.manual_command_id = None
            return None
        return f"manual override {control.manual_command_id} until {control.manual_until_ms}"

    async def handle(self, command: DispatchCommand, *, manual: bool = False) -> DispatchAck:
        """Apply one command to its asset and return the ack (one at a time per asset)."""
        asset = self.assets[command.asset]
        control = self.control[asset.id]
        control.last_command = command
        now_ms = self.now_ms()
        if not manual:
            override = self.override(asset.id, now_ms)
            if override is not None:
                return make_ack(command, "rejected", reason=override, ts_ms=now_ms)
        device = self.devices[asset.id]
        station = self.ocpp.get(asset.id)
        if station is not None:
            station.prepare(command.command_id, command.valid_until_ms)
        soc_pct = self.live.soc_pct(asset.id, now_ms)
        decision = self.ledger.check(
            asset.id, command.command_id, command.issued_ms, command.valid_until_ms, now_ms
        )
        verdict = decision.verdict
        sunspec = self.sunspec.get(asset.id)
        if verdict == "new" and sunspec is not None:  # only then is the device needed
            try:
                await sunspec.connect()
            except Exception as exc:
                sunspec.drop()
                reason = f"connect: {describe_error(exc)}"
                log.warning("%s: command %s failed: %s", asset.id, command.command_id, reason)
                return make_ack(command, "failed", reason=reason, ts_ms=self.now_ms())
            if soc_pct is None:
                soc_pct = await sunspec.read_soc_pct()
        site = self.site
        ack = await apply_command(
            command,
            ledger=self.ledger,
            device=device,
            limits=self.limits_now(asset.id, now_ms),
            site_headroom=UNLIMITED_SITE
            if site.max_import_w is None and site.max_export_w is None
            else self.live.headroom(asset.id, site.max_import_w, site.max_export_w, now_ms),
            soc_pct=soc_pct,
            faulted=self.faults.describe(asset.id),
            now_ms=self.now_ms,
            previous=control.previous,
            decision=decision,
        )
        if ack.result in APPLIED_RESULTS and ack.applied_w is not None:
            control.previous = PreviousSetpoint(ack.applied_w, ack.ts_ms)
            if station is not None and station.confirmed_ms is not None:
                confirmed = station.confirmed_ms  # latencies run to the station's answer
                ack = ack.model_copy(
                    update={
                        "measured_w": station.measured_w,
                        "latency_from_issued_ms": confirmed - command.issued_ms,
                        "latency_from_telemetry_ms": confirmed - command.ts_ms,
                    }
                )
        return ack
