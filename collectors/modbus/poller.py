"""The collector's I/O: one ``DevicePoller`` per inverter, and ``run`` for a site's fleet.

Each poller connects, discovers, polls on its ``PollSchedule`` and publishes one
``Telemetry`` per poll (QoS 1); a device that fails is marked in its retained
``AssetStatus`` and retried with exponential backoff (``backoff_s``), then re-discovered.
``run`` starts the pollers phased over one interval, publishes the collector's presence
and stops them all when asked. The MQTT client is the caller's (``Publisher``).

How a failure is marked (:func:`classify_failure`) matters downstream: control latches a
*lost device* fault (an emergency stop until an operator clears it) on a device that is
``offline`` ``[control] lost_after_failures`` times in a row, and only then.

- ``silent`` -> state ``offline``: nothing came back. The connection was refused, reset or
  timed out, or a request got no byte in reply within ``[modbus] timeout_s``. The device is
  gone (powered off, unplugged, the network down).
- ``garbage`` -> state ``error``: the device answered, not usably: a Modbus exception, a
  reply of the wrong length or function, a byte stream that is not Modbus TCP, a frame of
  another transaction or unit or a truncated one (``GarbledReply``), a SunSpec map that
  does not parse. The device is there and misbehaving; it is retried like the rest, and
  the commands to it fail (``failed`` acks) until it answers properly.
- ``internal`` -> state ``error`` with the reason ``internal error: …``: a bug here.

``consecutive_failures`` in the status counts the failures in a row *of the kind the
state names* (a failure of the other kind starts the count afresh), so that one silent
timeout after a run of garbage is not taken for a lost device; the backoff
(``retry_in_ms``) counts every failure in a row. ``CollectorStats.failure_kinds`` counts
them by kind (the metric ``gridflex_modbus_device_failures_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from collectors.modbus.connection import ConnectionFactory, discover_plan
from collectors.modbus.fast import DeviceError, GarbledReply, LeanModbusClient, Reply, Ticker
from collectors.modbus.plan import (
    LOW_PRIORITY_EVERY,
    InverterReading,
    PollPlan,
    decode_data,
    decode_reading,
)
from collectors.modbus.schedule import LatenessStats, PollSchedule, backoff_s
from collectors.modbus.telemetry import KIND, TelemetryEncoder
from gridflex.config import InverterAsset, SiteConfig
from gridflex.contract import (
    AssetStatus,
    Capabilities,
    CollectorStatus,
    collector_topic,
    status_topic,
    telemetry_topic,
)
from gridflex.mqtt_drops import STATUS_REFRESH_S, DropWatch, dropped_count
from gridflex.mqtt_factory import MqttPublisher
from gridflex.sunspec.discovery import DiscoveryError, IllegalAddress, ReadRegisters

__all__ = [
    "COMPONENT",
    "CollectorStats",
    "DevicePoller",
    "FailureKind",
    "Publisher",
    "classify_failure",
    "collector_status",
    "run",
]

log = logging.getLogger(__name__)

#: Modbus exception codes after which the next slot is tried on the same connection:
#: 5 acknowledge (the device is busy with a long request), 6 server device busy.
TRANSIENT_EXCEPTION_CODES = frozenset({5, 6})

COMPONENT = "modbus"


#: What the collector needs of an MQTT client (``AsyncMqttClient`` fits).
Publisher = MqttPublisher

FailureKind = Literal["silent", "garbage", "internal"]
"""How a device failed: said nothing, answered garbage, or a bug here (module docstring)."""

_STATE_OF: dict[FailureKind, Literal["offline", "error"]] = {
    "silent": "offline",
    "garbage": "error",
    "internal": "error",
}


def classify_failure(exc: BaseException) -> FailureKind:
    """``silent``, ``garbage`` or ``internal``: what a failure says of the device.

    Garbage first: ``GarbledReply`` is a ``TimeoutError`` (an ``OSError``) whose device did
    send bytes. Any other ``OSError`` (refused, reset, timed out) is silence.
    """
    if isinstance(exc, GarbledReply | DeviceError | DiscoveryError | IllegalAddress):
        return "garbage"
    if isinstance(exc, OSError):
        return "silent"
    return "internal"


@dataclass
class CollectorStats:
    """Counters of one collector run (one asyncio loop, no locking needed)."""

    lateness: LatenessStats = field(default_factory=LatenessStats)
    missed: int = 0
    published: int = 0
    failures: int = 0
    slot_failures: int = 0
    #: Device failures (``failures``) by ``FailureKind``.
    failure_kinds: Counter[str] = field(default_factory=Counter)
    invalid: int = 0
    #: Devices whose last status was online, and devices polled (for the metrics).
    online: int = 0
    devices: int = 0
    counting: bool = True
    window_s: float = 0.0  # length of the counting window (set when the run ends)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class DevicePoller:
    """Poll one inverter forever: discover, poll on schedule, back off on failure."""

    def __init__(
        self,
        site: SiteConfig,
        asset: InverterAsset,
        mqtt: Publisher,
        stats: CollectorStats,
        *,
        boot: str,
        phase_s: float = 0.0,
        connection: ConnectionFactory = LeanModbusClient,
        ticker: Ticker | None = None,
    ) -> None:
        self.site = site
        self.asset = asset
        self.mqtt = mqtt
        self.stats = stats
        self.boot = boot
        self.phase_s = phase_s
        self.connection = connection
        self.ticker = ticker
        self.seq = 0
        #: Failures in a row, of any kind (the backoff).
        self.failures = 0
        #: The kind of the last failure and how many of that kind in a row (the status).
        self.streak: tuple[FailureKind | None, int] = (None, 0)
        self.online = False
        self._telemetry_topic = telemetry_topic(site.id, KIND, asset.id)
        self._status_topic = status_topic(site.id, KIND, asset.id)
        self._encoder = TelemetryEncoder(site.id, asset.id, boot)
        self._invalid_logged = False
        self._polls = 0
        self._slot_failures = 0
        self._slot_garbled = False  # a slot among _slot_failures got a GarbledReply
        self.stopping = False
        #: Set once the first connect-and-discover attempt has ended (either way).
        self.tried = asyncio.Event()

    def publish_status(
        self,
        state: Literal["online", "offline", "error"],
        reason: str | None = None,
        retry_in_ms: int | None = None,
        capabilities: Capabilities | None = None,
        failures: int = 0,
    ) -> None:
        """Publish this asset's retained status; ``failures``: of the state's kind in a row."""
        online = state == "online"
        self.stats.online += online - self.online
        self.online = online
        status = AssetStatus(
            site=self.site.id,
            asset=self.asset.id,
            kind=KIND,
            ts_ms=_now_ms(),
            boot=self.boot,
            online=self.online,
            state=state,
            reason=reason,
            consecutive_failures=failures,
            retry_in_ms=retry_in_ms,
            capabilities=capabilities,
        )
        self.mqtt.publish(self._status_topic, status.to_json(), qos=1, retain=True)

    async def run(self) -> None:
        """Connect, discover and poll; on failure report and retry with backoff."""
        cfg = self.site.modbus
        loop = asyncio.get_running_loop()
        schedule = PollSchedule(loop.time() + self.phase_s, cfg.poll_interval_ms / 1000.0)
        while not self.stopping:
            delay_s = cfg.backoff_initial_s
            client = self.connection(
                self.asset.host,
                self.asset.port,
                timeout_s=cfg.timeout_s,
                ticker=self.ticker,
            )
            try:
                await client.connect()
                read = client.reader(self.asset.unit_id)
                plan = await discover_plan(
                    read,
                    site_max_charge_w=self.asset.max_charge_w,
                    site_max_discharge_w=self.asset.max_discharge_w,
                )
                self.tried.set()
                self.failures = 0
                self.streak = (None, 0)
                self._slot_failures = 0  # a rediscovered device starts afresh
                self._slot_garbled = False
                self.publish_status("online", capabilities=plan.capabilities)
                log.info("%s: online, models %s", self.asset.id, plan.model_map.model_ids)
                schedule.resume(loop.time())
                if isinstance(client, LeanModbusClient):
                    await self._poll_chained(client, plan, schedule)
                else:
                    await self._poll(read, plan, schedule)
            except Exception as exc:  # whatever it is: mark the device and try again
                self.tried.set()
                kind = classify_failure(exc)
                if kind == "silent" and self._slot_garbled:
                    kind = "garbage"  # the slots lost before it had garbage in reply
                self._slot_garbled = False
                self.failures += 1
                self.stats.failures += 1
                self.stats.failure_kinds[kind] += 1
                last_kind, in_a_row = self.streak
                self.streak = (kind, in_a_row + 1 if kind == last_kind else 1)
                delay_s = backoff_s(self.failures, cfg.backoff_initial_s, cfg.backoff_max_s)
                reason = f"{type(exc).__name__}: {exc}"[:200]
                if kind == "internal":
                    reason = f"internal error: {reason}"[:200]
                    log.error(
                        "%s: %s; retry in %.1f s", self.asset.id, reason, delay_s, exc_info=exc
                    )
                elif self.streak[1] == 1:
                    log.warning("%s: %s; retry in %.1f s", self.asset.id, reason, delay_s)
                self.publish_status(
                    _STATE_OF[kind],
                    reason,
                    retry_in_ms=round(delay_s * 1000),
                    failures=self.streak[1],
                )
            finally:
                client.close()
            await asyncio.sleep(delay_s)

    def _transient(self, exc: BaseException) -> bool:
        """Whether a failed poll costs only its slot; counts it.

        A timeout or a busy device, fewer than ``[modbus] failures_before_offline`` times in
        a row: the next slot is tried on the same connection (a late reply is discarded by
        its transaction id). Anything else, or too many in a row, takes the device offline
        and rediscovers it.
        """
        busy = isinstance(exc, DeviceError) and exc.code in TRANSIENT_EXCEPTION_CODES
        if not (busy or isinstance(exc, TimeoutError)):
            return False
        self._slot_garbled = self._slot_garbled or isinstance(exc, GarbledReply)
        self._slot_failures += 1
        self.stats.slot_failures += 1
        if self._slot_failures >= self.site.modbus.failures_before_offline:
            return False
        if self._slot_failures == 1:
            log.info("%s: a poll failed (%s); trying the next slot", self.asset.id, exc)
        return True

    def _begin_poll(self, plan: PollPlan, schedule: PollSchedule, now_s: float) -> int:
        """Start the poll due now: count lateness and missed slots; return how many reads."""
        missed_before = schedule.missed
        lateness_s = schedule.begin(now_s)
        stats = self.stats
        if stats.counting:
            stats.lateness.record(lateness_s)
            stats.missed += schedule.missed - missed_before
        self._polls += 1
        if self._polls % LOW_PRIORITY_EVERY == 1:
            return len(plan.reads)
        return plan.every_poll

    def _publish_reading(self, reading: InverterReading) -> None:
        """Publish one reading as telemetry, timestamped now (its answer just arrived)."""
        ts_ms = _now_ms()
        self.seq += 1
        stats = self.stats
        try:
            payload = self._encoder.encode(reading, ts_ms=ts_ms, seq=self.seq)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            stats.invalid += 1
            if not self._invalid_logged:
                self._invalid_logged = True
                log.warning(
                    "%s: reading outside the contract, not published: %s", self.asset.id, exc
                )
            return
        self.mqtt.publish(self._telemetry_topic, payload, 1)
        stats.published += 1

    async def _poll(self, read: ReadRegisters, plan: PollPlan, schedule: PollSchedule) -> None:
        """Poll on schedule with any ``ReadRegisters`` (one coroutine step per read)."""
        loop = asyncio.get_running_loop()
        blocks: list[Sequence[int]] = [()] * len(plan.reads)
        self._polls = 0
        while not self.stopping:
            delay = schedule.due_s() - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            last = self._begin_poll(plan, schedule, loop.time())
            if not blocks[-1]:  # the slow blocks were never read: the first poll lost its slot
                last = len(plan.reads)
            try:
                for i in range(last):
                    blocks[i] = await read(*plan.reads[i])
            except (TimeoutError, DeviceError) as exc:
                if not self._transient(exc):
                    raise
                schedule.finish()  # this slot is lost, the next one is tried
                continue
            schedule.finish()
            self._slot_failures = 0
            self._slot_garbled = False
            self._publish_reading(decode_reading(plan, blocks))

    async def _poll_chained(
        self, client: LeanModbusClient, plan: PollPlan, schedule: PollSchedule
    ) -> None:
        """Poll on schedule as a chain of callbacks: slot, request, reply, publish, slot.

        The same schedule and messages as ``_poll`` without a task wake-up, a future and
        a sleep per poll: slots wait in the fleet's ``Ticker``, replies arrive as register
        bytes straight from the protocol and are decoded by ``decode_data`` (the hot path
        of the lean client). Returns when stopping; raises what a read failed with.
        """
        loop = asyncio.get_running_loop()
        ticker = self.ticker or Ticker(loop)
        done: asyncio.Future[None] = loop.create_future()
        reads, unit_id = plan.reads, self.asset.unit_id
        data: list[bytes] = [b""] * len(reads)
        last = index = 0
        self._polls = 0

        def start() -> None:
            nonlocal last, index
            if done.done():  # a slot left over from a loop that has ended
                return
            if self.stopping:
                done.set_result(None)
                return
            last = self._begin_poll(plan, schedule, loop.time())
            if not data[-1]:  # the slow blocks were never read: the first poll lost its slot
                last = len(reads)
            index = 0
            client.request(*reads[0], unit_id, on_reply)

        def on_reply(reply: Reply) -> None:
            nonlocal index
            if done.done():  # stopped or failed meanwhile
                return
            if isinstance(reply, Exception):
                if self._transient(reply):  # this slot is lost, the next one is tried
                    schedule.finish()
                    ticker.call_at(schedule.due_s(), start)
                    return
                done.set_exception(reply)
                return
            data[index] = reply
            index += 1
            if index < last:
                client.request(*reads[index], unit_id, on_reply)
                return
            schedule.finish()
            self._slot_failures = 0
            self._slot_garbled = False
            try:
                self._publish_reading(decode_data(plan, data))
            except Exception as exc:  # a bug must end the poll loop visibly, not silently
                done.set_exception(exc)
                return
            ticker.call_at(schedule.due_s(), start)

        ticker.call_at(schedule.due_s(), start)
        try:
            await done
        finally:
            if ticker is not self.ticker:
                ticker.close()


def collector_status(
    site: SiteConfig,
    boot: str,
    *,
    online: bool,
    mqtt_dropped: int | None = None,
    component: str = COMPONENT,
) -> CollectorStatus:
    """Return the collector's retained presence (its last will with ``online=False``).

    ``component`` is ``modbus``, or a shard's ``modbus-{i}of{n}`` (``gridflex.shard``).
    """
    return CollectorStatus(
        site=site.id,
        component=component,
        ts_ms=_now_ms(),
        online=online,
        boot=boot,
        assets=[a.id for a in site.inverters],
        mqtt_dropped=mqtt_dropped,
    )


async def _refresh_presence(
    site: SiteConfig, boot: str, mqtt: Publisher, stop: asyncio.Event, component: str
) -> None:
    """Publish the presence again whenever the MQTT drop count moved (``DropWatch``)."""
    watch = DropWatch(mqtt)
    topic = collector_topic(site.id, component)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), STATUS_REFRESH_S)
        dropped = watch.due()
        if dropped is not None:
            status = collector_status(
                site, boot, online=True, mqtt_dropped=dropped, component=component
            )
            mqtt.publish(topic, status.to_json(), qos=1, retain=True)


async def _stop_pollers(pollers: list[DevicePoller], tasks: list[asyncio.Task[None]]) -> None:
    """Stop every poller task.

    Python 3.11's ``asyncio.wait_for`` (used inside pymodbus) can swallow a cancellation
    that races with a reply, so each poller also checks its ``stopping`` flag and the
    cancellation is repeated until every task has ended.
    """
    for poller in pollers:
        poller.stopping = True
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=0.5)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("poller %s ended with %r", task.get_name(), task.exception())


async def _when_tried(pollers: list[DevicePoller], callback: Callable[[], object]) -> None:
    """Call ``callback`` once every poller has tried its first discovery."""
    for poller in pollers:
        await poller.tried.wait()
    callback()


async def run(
    site: SiteConfig,
    mqtt: Publisher,
    stop: asyncio.Event,
    *,
    boot: str | None = None,
    stats: CollectorStats | None = None,
    warmup_s: float = 0.0,
    connection: ConnectionFactory = LeanModbusClient,
    on_discovered: Callable[[], object] | None = None,
    component: str = COMPONENT,
) -> CollectorStats:
    """Poll every inverter of ``site`` until ``stop`` is set; publish statuses on the way out.

    The caller owns the MQTT client (connect before, flush and stop after).
    ``connection`` makes the Modbus TCP connections for discovery and polls (the lean
    client; the benchmarks' pymodbus baseline plugs in here); ``on_discovered`` is called
    once every device has been tried once (discovered, or failed and waiting for its
    retry). ``component`` names the presence topic: ``modbus``, or a shard's
    ``modbus-{i}of{n}`` whose ``site`` holds only the inverters it owns.
    """
    boot = boot or uuid.uuid4().hex[:12]
    stats = stats or CollectorStats()
    interval_s = site.modbus.poll_interval_ms / 1000.0
    inverters = site.inverters
    topic = collector_topic(site.id, component)
    presence = collector_status(
        site, boot, online=True, mqtt_dropped=dropped_count(mqtt), component=component
    )
    mqtt.publish(topic, presence.to_json(), qos=1, retain=True)
    refresher = asyncio.create_task(
        _refresh_presence(site, boot, mqtt, stop, component), name="presence"
    )
    ticker = Ticker(asyncio.get_running_loop())
    pollers = [
        DevicePoller(
            site,
            asset,
            mqtt,
            stats,
            boot=boot,
            phase_s=interval_s * i / max(1, len(inverters)),
            connection=connection,
            ticker=ticker,
        )
        for i, asset in enumerate(inverters)
    ]
    stats.devices = len(pollers)
    tasks = [asyncio.create_task(p.run(), name=f"poll-{p.asset.id}") for p in pollers]
    watcher = None
    if on_discovered is not None:
        watcher = asyncio.create_task(_when_tried(pollers, on_discovered), name="discovered")
    if warmup_s > 0:
        stats.counting = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), warmup_s)
        stats.lateness = LatenessStats()
        stats.missed = 0
        stats.counting = True
    window_start = asyncio.get_running_loop().time()
    await stop.wait()
    stats.window_s = asyncio.get_running_loop().time() - window_start
    if watcher is not None:
        watcher.cancel()
    await refresher
    await _stop_pollers(pollers, tasks)
    ticker.close()
    for poller in pollers:
        poller.publish_status("offline", "collector stopped")
    presence = collector_status(
        site, boot, online=False, mqtt_dropped=dropped_count(mqtt), component=component
    )
    mqtt.publish(topic, presence.to_json(), qos=1, retain=True)
    return stats
