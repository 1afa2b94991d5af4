"""The control service: dispatch commands from MQTT to the devices, one ack per command.

``gridflex control`` runs :class:`ControlService` on one event loop:

- one :class:`~gridflex.mqtt_asyncio.AsyncMqttClient` (persistent session
  ``gridflex-control-{site}``, QoS 1) subscribed to ``gridflex/v1/{site}/dispatch/+/command``;
  a payload that is not a valid ``command/1`` for a known asset of this site goes to the
  dead letter topic ``gridflex/v1/deadletter/control`` with the reason, and the service
  goes on;
- per asset an ``asyncio.Queue`` and one worker task: the commands of one asset are applied
  one at a time in arrival order (the ledger's check-then-record relies on it), while
  assets proceed in parallel;
- per SunSpec inverter a lazily connected :class:`~control.sunspec.SunSpecDevice`
  (connect + ``discover_plan`` on the first new command). When that fails the command is
  acked ``failed`` with the reason (not recorded, so a redelivery is tried again), the
  connection is dropped, and the next command connects again; other assets are unaffected;
- every command goes through :func:`control.writer.apply_command` (ledger, clamp, write,
  read-back) and its ack is published on ``gridflex/v1/{site}/dispatch/{asset}/ack``.

Inputs of the clamp, and their simplifications for now:

- ``Limits`` from the site file: ``max_charge_w`` / ``max_discharge_w`` and the SoC stop
  points ``soc_min_pct`` / ``soc_max_pct`` of the asset; no ramp, no derating, no profile.
- SoC: read from the device's SunSpec model 713 (``SoC``) right before a *new* command is
  applied (one extra Modbus read). When the device has no 713 or the read fails the SoC is
  unknown (None) and the clamp allows no discharge (rule ``soc_unknown``).
- Site headroom: ``[site] max_import_w`` / ``max_export_w`` applied to each asset as a
  whole-site bound, i.e. as if the asset were the only load on the transformer. The rest of
  the site's power (other assets, the building) is not subtracted yet, so the bound is
  optimistic when several assets push the same way.
- ``faulted``: always None (latched faults come with the watchdog).
- ``revert_s`` of the device's own fail-safe: ``max(2 x dispatch.refresh_s, 10)`` s.
- Watchdog: an asset that gets no command for ``watchdog_s`` (default ``revert_s``; the
  pipeline's keep-alive comes every ``refresh_s``) is written back to 0 W by the writer
  itself, for a pipeline that went silent while the writer runs.

Charging stations (``kind = "evse"``): per EVSE an :class:`~control.ocpp.OcppDevice`, written
through the CSMS process over MQTT (one shared :class:`~control.ocpp.CsmsClient`, see
``control.ocpp``) with the command's ``command_id`` as correlation id; the ack carries the
station's next meter value as ``measured_w`` and its latencies run to the station's answer.
The SoC comes from the EVSE's latest telemetry (None when unknown: no discharge).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus.connection import discover_plan, register_reader
from control.clamp import Limits, SiteHeadroom
from control.ledger import APPLIED_RESULTS, Ledger
from control.ocpp import CsmsClient, OcppDevice
from control.sunspec import SunSpecDevice
from control.writer import PreviousSetpoint, apply_command, make_ack
from gridflex.config import EvseAsset, InverterAsset, SiteConfig
from gridflex.contract import (
    PREFIX,
    ContractError,
    DeadLetter,
    DispatchAck,
    DispatchCommand,
    ack_topic,
    deadletter_topic,
    parse_payload,
    parse_topic,
)
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.sunspec.discovery import ModelMap
from gridflex.sunspec.tables import load_model

__all__ = [
    "COMPONENT",
    "ControlService",
    "command_filter",
    "default_ledger_path",
    "limits_of",
    "revert_s_of",
    "site_headroom_of",
]

log = logging.getLogger(__name__)

COMPONENT = "control"


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


def limits_of(asset: InverterAsset | EvseAsset) -> Limits:
    """The asset's ratings and SoC stop points from the site file."""
    return Limits(
        max_charge_w=asset.max_charge_w,
        max_discharge_w=asset.max_discharge_w,
        soc_min_pct=asset.soc_min_pct,
        soc_max_pct=asset.soc_max_pct,
    )


def site_headroom_of(site: SiteConfig) -> SiteHeadroom:
    """The transformer limits as a whole-site bound per asset (see the module docstring)."""
    return SiteHeadroom(import_w=site.max_import_w, export_w=site.max_export_w)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class LazySunSpecDevice:
    """A ``SetpointDevice`` that connects (and discovers) on first use.

    Any failure of the connection, a write or a read-back drops the connection, so the next
    command starts from a fresh connection and discovery.
    """

    def __init__(self, asset: InverterAsset, *, revert_s: int, timeout_s: float) -> None:
        self.asset = asset
        self.revert_s = revert_s
        self.timeout_s = timeout_s
        self._client: AsyncModbusTcpClient | None = None
        self._device: SunSpecDevice | None = None

    @property
    def connected(self) -> bool:
        """Whether a discovered connection is open."""
        return self._device is not None

    async def connect(self) -> SunSpecDevice:
        """The connected device; connects and discovers it first if needed (raises)."""
        if self._device is not None and self._client is not None and self._client.connected:
            return self._device
        self.drop()
        a = self.asset
        client = AsyncModbusTcpClient(
            a.host, port=a.port, timeout=self.timeout_s, retries=0, reconnect_delay=0
        )
        try:
            if not await client.connect():
                raise ConnectionError(f"cannot connect to {a.host}:{a.port}")
            plan = await discover_plan(register_reader(client, a.unit_id))
        except BaseException:
            client.close()
            raise
        self._client = client
        self._device = SunSpecDevice(client, plan.model_map, a.unit_id, self.revert_s)
        log.info("%s: connected to %s:%d", a.id, a.host, a.port)
        return self._device

    def drop(self) -> None:
        """Close the connection (if any); the next use reconnects."""
        if self._client is not None:
            self._client.close()
        self._client = None
        self._device = None

    async def write(self, setpoint_w: float) -> None:
        """See ``SunSpecDevice.write``."""
        try:
            await (await self.connect()).write(setpoint_w)
        except Exception:
            self.drop()
            raise

    async def read_back(self) -> float:
        """See ``SunSpecDevice.read_back``."""
        try:
            return await (await self.connect()).read_back()
        except Exception:
            self.drop()
            raise

    async def read_soc_pct(self) -> float | None:
        """The battery's SoC from model 713, %; None when absent or unreadable."""
        device = self._device
        if device is None:
            return None
        try:
            return await _read_soc_pct(device.client, device.model_map, device.unit_id)
        except Exception as exc:
            log.warning("%s: SoC unknown: %s", self.asset.id, _describe(exc))
            return None


async def _read_soc_pct(
    client: AsyncModbusTcpClient, model_map: ModelMap, unit_id: int
) -> float | None:
    instance = model_map.find(713)
    if instance is None:
        return None
    table = load_model(713)
    registers = await register_reader(client, unit_id)(instance.address, table.size)
    value = table.decode_scaled(registers, "SoC")
    if not isinstance(value, int | float) or not 0.0 <= value <= 100.0:
        return None
    return float(value)


class ControlService:
    """Commands in from MQTT, acks out, one worker per asset (see the module docstring)."""

    def __init__(
        self,
        site: SiteConfig,
        ledger: Ledger,
        mqtt: AsyncMqttClient,
        *,
        now_ms: Callable[[], int] = _now_ms,
        watchdog_s: float | None = None,
    ) -> None:
        self.site = site
        self.ledger = ledger
        self.mqtt = mqtt
        self.now_ms = now_ms
        self.revert_s = revert_s_of(site)
        #: No command for this long: the asset goes back to its default setpoint (0 W).
        self.watchdog_s = float(watchdog_s if watchdog_s is not None else self.revert_s)
        self.watchdog_trips = 0
        self.headroom = site_headroom_of(site)
        self.assets: dict[str, InverterAsset | EvseAsset] = {a.id: a for a in site.assets}
        self.devices: dict[str, LazySunSpecDevice | OcppDevice] = {
            a.id: LazySunSpecDevice(a, revert_s=self.revert_s, timeout_s=site.modbus.timeout_s)
            for a in site.inverters
        }
        self.csms = CsmsClient.from_site(mqtt, site, now_ms=now_ms)
        for evse in site.evses:
            self.devices[evse.id] = OcppDevice(
                evse, self.csms, hold_s=self.revert_s, nominal_hz=site.nominal_frequency_hz
            )
        self.previous: dict[str, PreviousSetpoint] = {}
        self.queues: dict[str, asyncio.Queue[DispatchCommand]] = {}
        self.workers: list[asyncio.Task[None]] = []
        self.dead_letters = 0
        self.acks = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start one worker per asset and subscribe to the commands (MQTT must be started)."""
        for asset_id in self.assets:
            queue: asyncio.Queue[DispatchCommand] = asyncio.Queue()
            self.queues[asset_id] = queue
            self.workers.append(
                asyncio.create_task(self._worker(asset_id, queue), name=f"control-{asset_id}")
            )
        if self.site.evses:
            self.csms.start()
        self.mqtt.subscribe(command_filter(self.site.id), self._on_message, qos=1)
        log.info(
            "control: %d assets (%d inverters), revert_s %d, subscribed to %s",
            len(self.assets),
            len(self.site.inverters),
            self.revert_s,
            command_filter(self.site.id),
        )

    async def stop(self) -> None:
        """Cancel the workers (a command being applied is abandoned) and drop connections."""
        for task in self.workers:
            task.cancel()
        for task in self.workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.workers.clear()
        for device in self.devices.values():
            device.drop()

    async def run(self, stop: asyncio.Event) -> None:
        """Start, wait for ``stop``, stop."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    # ------------------------------------------------------------------ input

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            message = parse_payload(payload)
        except ContractError as exc:
            self._dead_letter(topic, payload, str(exc))
            return
        if not isinstance(message, DispatchCommand):
            self._dead_letter(topic, payload, f"expected command/1, got {type(message).__name__}")
            return
        try:
            topic_asset: str | None = parse_topic(topic).get("asset")
        except ContractError:
            topic_asset = None
        if message.site != self.site.id:
            self._dead_letter(topic, payload, f"command for site {message.site!r}, not this one")
        elif message.asset != topic_asset:
            self._dead_letter(topic, payload, f"asset {message.asset!r} does not match the topic")
        elif message.asset not in self.queues:
            self._dead_letter(topic, payload, f"unknown asset {message.asset!r}")
        else:
            self.queues[message.asset].put_nowait(message)

    def _dead_letter(self, topic: str, payload: bytes, reason: str) -> None:
        self.dead_letters += 1
        log.warning("control: refused a message on %s: %s", topic, reason)
        encoding: Literal["utf-8", "base64"] = "utf-8"
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
        letter = DeadLetter(
            site=self.site.id,
            component=COMPONENT,
            ts_ms=self.now_ms(),
            reason=reason[:1000],
            topic=topic,
            payload=text[:10_000],
            payload_encoding=encoding,
        )
        self.mqtt.publish(deadletter_topic(COMPONENT), letter.to_json(), qos=1)

    # ------------------------------------------------------------------ per asset

    async def _worker(self, asset_id: str, queue: asyncio.Queue[DispatchCommand]) -> None:
        while True:
            try:
                command = await asyncio.wait_for(queue.get(), self.watchdog_s)
            except TimeoutError:
                await self._watchdog(asset_id)
                continue
            try:
                ack = await self.handle(command)
            except Exception as exc:  # a bug must not stop the asset's worker
                log.exception("%s: command %s crashed", asset_id, command.command_id)
                ack = make_ack(
                    command,
                    "failed",
                    reason=f"internal error: {_describe(exc)}",
                    ts_ms=self.now_ms(),
                )
            finally:
                queue.task_done()
            self.acks += 1
            self.mqtt.publish(ack_topic(self.site.id, asset_id), ack.to_json(), qos=1)

    async def _watchdog(self, asset_id: str) -> None:
        """No command within ``watchdog_s``: write the default setpoint (0 W) once.

        The device's own reversion timer (``revert_s``) covers a writer that died; this
        covers a pipeline that went silent while the writer runs. Only an asset this writer
        moved away from 0 W is written; a failure is logged and tried again at the next
        timeout.
        """
        last = self.previous.get(asset_id)
        device = self.devices.get(asset_id)
        if last is None or last.setpoint_w == 0.0 or device is None:
            return
        try:
            await device.connect()
            await device.write(0.0)
        except Exception as exc:
            device.drop()
            log.warning("%s: watchdog could not write 0 W: %s", asset_id, _describe(exc))
            return
        self.watchdog_trips += 1
        self.previous[asset_id] = PreviousSetpoint(0.0, self.now_ms())
        log.warning(
            "%s: no command for %.0f s: back to the default setpoint 0 W (was %.0f W)",
            asset_id,
            self.watchdog_s,
            last.setpoint_w,
        )

    async def handle(self, command: DispatchCommand) -> DispatchAck:
        """Apply one command to its asset and return the ack (one at a time per asset)."""
        asset = self.assets[command.asset]
        device = self.devices[asset.id]
        if isinstance(device, OcppDevice):
            device.prepare(command.command_id, command.valid_until_ms)
        soc_pct: float | None = None
        verdict = self.ledger.check(
            asset.id,
            command.command_id,
            command.issued_ms,
            command.valid_until_ms,
            self.now_ms(),
        ).verdict
        if verdict == "new":  # only then is the device needed
            try:
                await device.connect()
            except Exception as exc:
                device.drop()
                reason = f"connect: {_describe(exc)}"
                log.warning("%s: command %s failed: %s", asset.id, command.command_id, reason)
                return make_ack(command, "failed", reason=reason, ts_ms=self.now_ms())
            soc_pct = await device.read_soc_pct()
        ack = await apply_command(
            command,
            ledger=self.ledger,
            device=device,
            limits=limits_of(asset),
            site_headroom=self.headroom,
            soc_pct=soc_pct,
            faulted=None,
            now_ms=self.now_ms,
            previous=self.previous.get(asset.id),
        )
        if ack.result in APPLIED_RESULTS and ack.applied_w is not None:
            self.previous[asset.id] = PreviousSetpoint(ack.applied_w, ack.ts_ms)
            if isinstance(device, OcppDevice) and device.confirmed_ms is not None:
                confirmed = device.confirmed_ms  # latencies run to the station's answer
                ack = ack.model_copy(
                    update={
                        "measured_w": device.measured_w,
                        "latency_from_issued_ms": confirmed - command.issued_ms,
                        "latency_from_telemetry_ms": confirmed - command.ts_ms,
                    }
                )
        return ack
