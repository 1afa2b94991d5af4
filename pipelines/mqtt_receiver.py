"""The MQTT subscriber behind the dataflow's source, in a thread or in its own process.

:class:`MqttReceiver` is an MQTT client (``gridflex.mqtt_asyncio``, on an event loop in its
own thread) on a persistent session (MQTT 3.1.1 ``clean_session=False``, stable client id,
QoS 1 subscriptions, one per topic filter, renewed on every connect) that collects messages
as ``(topic, payload, received_ms)`` tuples; :meth:`~MqttReceiver.take` hands over what
arrived since the last call, with the time it vouches for: every message received before
it has been handed over (the source turns that into heartbeats).

Receiving costs CPU per message (paho's Python packet handling took ~100 µs per QoS 1
message here, as much as the whole dataflow; the native client a fraction of it), and in
the dataflow's process the two would share one GIL. :func:`receiver_main` therefore runs a
receiver in a child process (started with ``spawn``; this module imports nothing heavy)
and ships batches over a pipe; the parent only unpickles them.

Durable acknowledgement (``ReceiverSettings.wal_dir`` set, the default of ``gridflex
pipeline``): the client withholds each PUBACK (``manual_ack``); every message is also
encoded into a write-ahead log buffer (:mod:`pipelines.wal`), and ``commit_ms`` after the
first message of a group the loop hands the group and its withheld PUBACKs to the log's
commit thread, which appends and fsyncs the group and only then has the PUBACKs sent. A
``kill -9`` thus loses nothing the broker counts as delivered: what was acknowledged is in
the log (replayed on start), what was not is redelivered by the broker's session.
Messages go to the dataflow at once, not after the fsync (no added latency).

Bounded queue (``ReceiverSettings.receive_queue``). The messages waiting for
:meth:`~MqttReceiver.take` never exceed ``receive_queue``: at it the client stops handing
messages over and stops reading its socket (``AsyncMqttClient.pause_reading``): the
kernel's receive buffer fills, TCP's window closes and the broker keeps the rest in the
session's queue. :meth:`~MqttReceiver.take` resumes reading once the queue is at half the
bound or less. Nothing is dropped; ``read_pauses`` and ``max_pending`` tell it happened.

Shutdown: the parent writes to a control pipe; the child disconnects first (nothing more
is acknowledged), sends what it still holds, then ``None`` as end marker, and exits. The
child ignores SIGINT/SIGTERM (a Ctrl-C reaches the whole process group: the parent
decides) and exits by itself when the parent is gone (end of file on the control pipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

from gridflex.log import setup_logging
from gridflex.loop_thread import LoopThread
from gridflex.mqtt_asyncio import AsyncMqttClient, HeldAcks
from pipelines.wal import GroupCommitter, WriteAheadLog, encode_record

__all__ = ["Message", "MqttReceiver", "ReceiverCounters", "ReceiverSettings", "receiver_main"]

log = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 10.0

#: ``(topic, payload, received_ms)``; plain tuples pickle fastest.
Message = tuple[str, bytes, int]


@dataclass(frozen=True)
class ReceiverSettings:
    """Everything a receiver needs (picklable, for the child process).

    Attributes:
        host: Broker host.
        port: Broker port.
        tls: Use TLS.
        client_id: Stable client id, the name of the broker's persistent session.
        topic_filters: Subscriptions (the pipeline's: telemetry and acks).
        qos: Subscription QoS.
        username: Broker user name.
        password: Broker password.
        flush_ms: How often the child process ships a batch to the parent, ms.
        heartbeat_ms: How often the child ships an empty batch while nothing arrives, ms.
        keepalive_s: MQTT keepalive, s.
        log_level: Logging level of the child process (the parent's, by default).
        wal_dir: Write-ahead log of this receiver; ``None``: PUBACK on receipt (no
            durability across a crash).
        wal_retention_s: Age at which a sealed log segment is covered (deleted), s.
        wal_segment_s: Age at which the log starts a new segment, s.
        commit_ms: Longest wait between a message's arrival and its group's fsync, ms.
        receive_queue: Most messages held between the socket and :meth:`MqttReceiver.take`;
            at it the client stops reading its socket (TCP back-pressure: the broker holds
            the rest in the session), and reads again once :meth:`~MqttReceiver.take`
            brings the queue to half of it or less.

    """

    host: str
    port: int
    tls: bool
    client_id: str
    topic_filters: tuple[str, ...]
    qos: int = 1
    username: str | None = None
    password: str | None = None
    flush_ms: int = 5
    heartbeat_ms: int = 100
    keepalive_s: int = 30
    log_level: int = field(default_factory=lambda: logging.getLogger().getEffectiveLevel())
    wal_dir: str | None = None
    wal_retention_s: float = 30.0
    wal_segment_s: float = 5.0
    commit_ms: float = 2.0
    receive_queue: int = 10_000

    def __post_init__(self) -> None:
        if self.receive_queue < 1:
            raise ValueError(f"receive_queue must be >= 1, got {self.receive_queue}")


class ReceiverCounters(NamedTuple):
    """A receiver's counters, as its process ships them to the dataflow's (metrics)."""

    received: int
    queued: int
    read_pauses: int
    max_queued: int
    acknowledged: int


class MqttReceiver:
    """A subscriber that collects messages until :meth:`take` (see the module docstring)."""

    def __init__(self, settings: ReceiverSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pending: list[Message] = []
        self._stopping = False
        self.received = 0
        self._limit = settings.receive_queue
        self._low_water = settings.receive_queue // 2
        self._paused = False  # under the lock: reading paused, resume not yet scheduled
        #: Most messages the queue ever held (never above ``receive_queue``).
        self.max_pending = 0
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self._client = AsyncMqttClient(
            f"{'mqtts' if settings.tls else 'mqtt'}://{host}:{settings.port}",
            settings.client_id,
            username=settings.username,
            password=settings.password,
            clean_session=False,
            keepalive_s=settings.keepalive_s,
            reconnect_min_s=1.0,
            reconnect_max_s=30.0,
            manual_ack=settings.wal_dir is not None,
        )
        self._committer: GroupCommitter | None = None
        if settings.wal_dir is not None:
            wal = WriteAheadLog(
                Path(settings.wal_dir),
                retention_s=settings.wal_retention_s,
                segment_s=settings.wal_segment_s,
            )
            self._committer = GroupCommitter(wal)
        self._wal_buffer: list[bytes] = []  # encoded records of the group (loop thread)
        self._commit_handle: asyncio.TimerHandle | None = None
        self.acknowledged = 0
        for topic_filter in settings.topic_filters:
            self._client.subscribe(topic_filter, self._on_message, qos=settings.qos)
        self._loop: LoopThread | None = None

    def start(self) -> None:
        """Connect in the background (the client's own loop thread; it reconnects)."""
        self._loop = LoopThread(f"mqtt-{self.settings.client_id}")
        self._loop.run(self._client.start(), 10)
        log.info(
            "MQTT source %s subscribing to %s at %s:%d",
            self.settings.client_id,
            ", ".join(self.settings.topic_filters),
            self.settings.host,
            self.settings.port,
        )

    def counters(self) -> ReceiverCounters:
        """The receiver's counters now (``queued``: messages waiting for :meth:`take`)."""
        return ReceiverCounters(
            self.received,
            len(self._pending),
            self.read_pauses,
            self.max_pending,
            self.acknowledged,
        )

    @property
    def read_pauses(self) -> int:
        """Times the receiver stopped reading its socket because its queue was full."""
        return self._client.stats.read_pauses

    def _on_message(self, topic: str, payload: bytes) -> None:
        with self._lock:  # receive time and take time come from under one lock
            received_ms = _now_ms()
            pending = self._pending
            pending.append((topic, payload, received_ms))
            self.received += 1
            full = len(pending) >= self._limit and not self._paused
            if full:
                self._paused = True
            self.max_pending = max(self.max_pending, len(pending))
        if full:  # the next message stays in the socket (then the broker) until take()
            self._client.pause_reading()
        if self._committer is not None:
            self._wal_buffer.append(encode_record(topic, payload, received_ms))
            if self._commit_handle is None:
                loop = asyncio.get_running_loop()
                self._commit_handle = loop.call_later(self.settings.commit_ms / 1000, self._commit)

    def _commit(self) -> None:
        """Loop thread: hand the group and its withheld PUBACKs to the commit thread."""
        self._commit_handle = None
        if self._committer is None or not self._wal_buffer:
            return
        records, self._wal_buffer = self._wal_buffer, []
        held = self._client.take_held_acks()
        loop = asyncio.get_running_loop()

        def durable() -> None:  # commit thread, after the fsync
            loop.call_soon_threadsafe(self._send_acks, held)

        self._committer.submit(b"".join(records), len(records), durable)

    async def _commit_now(self) -> None:
        if self._commit_handle is not None:
            self._commit_handle.cancel()
        self._commit()

    def _send_acks(self, held: HeldAcks) -> None:
        self.acknowledged += self._client.send_acks(held)

    def take(self) -> tuple[list[Message], int]:
        """Return the messages that arrived since the last call, and ``through_ms``.

        Every message received before ``through_ms`` (UTC epoch ms) is in this batch or
        an earlier one: the basis of the source's heartbeats.
        """
        with self._lock:
            taken, self._pending = self._pending, []
            through_ms = _now_ms()
            resume = self._paused and len(self._pending) <= self._low_water
        if resume and self._loop is not None and not self._stopping:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: stopping
                self._loop.call(self._resume)
        return taken, through_ms

    def _resume(self) -> None:
        """Loop thread: read again if :meth:`take` left the queue at the low-water mark."""
        with self._lock:
            if not self._paused or len(self._pending) > self._low_water:
                return
            self._paused = False
        self._client.resume_reading()

    def stop(self) -> None:
        """Disconnect; what was acknowledged before is still returned by :meth:`take`."""
        if self._stopping:
            return
        self._stopping = True
        if self._loop is None:
            if self._committer is not None:
                self._committer.close()
            return
        if self._committer is not None:
            # What arrived is logged, its PUBACKs sent, before the disconnect.
            self._loop.run(self._commit_now(), _STOP_TIMEOUT_S)
            self._committer.close()
            # The PUBACKs the commit thread scheduled run before this (FIFO).
            self._loop.run(asyncio.sleep(0), _STOP_TIMEOUT_S)
        try:
            self._loop.run(self._client.stop(flush_timeout_s=0), _STOP_TIMEOUT_S)
        except Exception:  # stopping anyway: the broker keeps the session
            log.exception("MQTT source %s: unclean disconnect", self.settings.client_id)
        self._loop.close(_STOP_TIMEOUT_S)


def receiver_main(settings: ReceiverSettings, conn: Connection, control: Connection) -> None:
    """Child process: ship ``(through_ms, messages, counters)`` to ``conn`` until stopped.

    ``counters`` (:class:`ReceiverCounters`) are taken just before the batch, so ``queued``
    is the queue's depth at the hand-over; the parent's metrics read them.

    A batch goes out every ``flush_ms`` when there are messages, and every
    ``heartbeat_ms`` even when there are none (its ``through_ms`` tells the parent that
    nothing else arrived). Anything arriving on ``control`` (or its end of file, when the
    parent is gone) means stop: disconnect, ship the rest, then ``None`` as end marker.
    A pipe rather than a ``multiprocessing.Event``: setting an event that a killed process
    was waiting on can block the setter for ever.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    setup_logging(settings.log_level)  # a spawned child starts without the parent's set-up
    receiver = MqttReceiver(settings)
    receiver.start()
    last_sent_ms = 0
    try:
        while not control.poll(settings.flush_ms / 1000):
            counters = receiver.counters()
            batch, through_ms = receiver.take()
            if batch or through_ms - last_sent_ms >= settings.heartbeat_ms:
                conn.send((through_ms, batch, tuple(counters)))
                last_sent_ms = through_ms
        receiver.stop()
        counters = receiver.counters()
        rest, through_ms = receiver.take()
        conn.send((through_ms, rest, tuple(counters)))
        conn.send(None)
    except (BrokenPipeError, EOFError, ConnectionResetError):
        log.warning("MQTT receiver: the pipeline process is gone; exiting")
    finally:
        receiver.stop()
        conn.close()
        control.close()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
