"""MQTT at the edges of the dataflow: a Bytewax source and a publishing sink.

Source. :class:`MqttSource` is a ``FixedPartitionedSource``; each partition runs one
subscriber (:class:`pipelines.mqtt_receiver.MqttReceiver`: QoS 1 on a persistent session,
MQTT 3.1.1 ``clean_session=False`` with a stable client id, so the broker keeps what
arrives while the pipeline is down). By default the subscriber runs in a child process and
ships batches over a pipe: its per-message cost would otherwise compete with the dataflow
for this process's GIL. ``next_batch`` never blocks; it hands over what arrived
every ``poll_ms``, followed now and then (at most every ``heartbeat_ms``) by a
:class:`~pipelines.windows.Heartbeat` carrying the receiver's ``through_ms``: every message
received before it is already in the stream. The windows use heartbeats to tell real
silence from a dataflow that is behind. With more than one
partition each subscribes through a shared subscription (``$share/{group}/{filter}``) so
the broker spreads messages over them.

Stopping. A ``threading.Event`` (set by the CLI's signal handler) ends the partitions: the
subscriber disconnects first (nothing more is acknowledged), what it holds goes into the
dataflow, then the partition raises ``StopIteration``. The dataflow then completes on
finite input, so every window closes and every sink is closed (flushed). If a receiver
process dies, its partition ends the same clean way and records why in
``MqttSource.failures`` (the CLI then exits non-zero).

Durable acknowledgement. With ``wal_dir`` each partition's receiver logs every message
(append + grouped fsync, :mod:`pipelines.wal`) before it acknowledges it to the broker,
and the partition first replays what its log holds (``{wal_dir}/{client_id}-{i}``) into
the dataflow, then what the receiver gets. A ``kill -9`` at any moment loses nothing the
broker accepted; what is replayed twice (or redelivered) is de-duplicated by the history.

Bounded memory. Between the socket and Bytewax every queue is bounded: the receiver's
(``receive_queue`` messages; when full it stops reading its socket, so TCP back-pressure
makes the broker hold the rest in the persistent session, nothing dropped), the pipe to
this process (the OS's pipe buffer: the child's ``send`` blocks, then its queue fills) and
``next_batch`` (at most about ``batch_size`` messages per call). The replay of the
write-ahead log at start is bounded by the log's retention.

Sink. :class:`MqttSink` takes ``(topic, payload)`` pairs and publishes them at QoS 1
through the native asyncio client on a loop thread (bounded outgoing queue); on close it
waits (bounded) until the broker has acknowledged them.

Both ends use the native asyncio client (``gridflex.mqtt_asyncio``) rather than paho's
``MqttClient``: it costs a fraction of paho's CPU per message (``bench/pipeline.py``;
paho's ~70 µs per published QoS 1 message was the dataflow's own time in a burst of
commands), and ``MqttReceiver`` keeps control over the disconnect-then-drain order.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from gridflex.contract import is_retained_topic
from gridflex.loop_thread import LoopThread
from gridflex.mqtt import parse_url
from gridflex.mqtt_asyncio import AsyncMqttClient
from pipelines.mqtt_receiver import (
    MqttReceiver,
    ReceiverCounters,
    ReceiverSettings,
    receiver_main,
)
from pipelines.validate import RawMessage
from pipelines.wal import replay
from pipelines.windows import Heartbeat

__all__ = ["Arrival", "MqttSink", "MqttSource"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- source


Arrival = RawMessage | Heartbeat


class _Heartbeats:
    """A :class:`Heartbeat` at most every ``interval_ms`` of the receiver's ``through_ms``."""

    def __init__(self, interval_ms: int) -> None:
        self._interval_ms = interval_ms
        self._last_ms = 0

    def due(self, through_ms: int | None) -> Heartbeat | None:
        if through_ms is None or through_ms - self._last_ms < self._interval_ms:
            return None
        self._last_ms = through_ms
        return Heartbeat(through_ms)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _Replay:
    """What a partition's write-ahead log held at start, handed over before anything new."""

    def __init__(self, settings: ReceiverSettings) -> None:
        self._messages: list[RawMessage] = []
        if settings.wal_dir is not None:
            self._messages = [RawMessage(t, p, r) for t, p, r in replay(Path(settings.wal_dir))]
            if self._messages:
                log.info(
                    "MQTT source %s: replaying %d messages from the write-ahead log",
                    settings.client_id,
                    len(self._messages),
                )

    def __bool__(self) -> bool:
        return bool(self._messages)

    def take(self, limit: int) -> list[Arrival]:
        taken, self._messages = self._messages[:limit], self._messages[limit:]
        return list(taken)


class _ThreadPartition(StatefulSourcePartition[Arrival, None]):
    """A receiver on a loop thread of this process (simple; shares the GIL)."""

    def __init__(
        self,
        settings: ReceiverSettings,
        *,
        stop_event: threading.Event,
        poll_ms: int,
        heartbeat_ms: int,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        self._on_batch = on_batch
        self._replay = _Replay(settings)  # before the receiver opens a new segment
        self._receiver = MqttReceiver(settings)
        self._heartbeats = _Heartbeats(heartbeat_ms)
        self._stop_event = stop_event
        self._poll = timedelta(milliseconds=poll_ms)
        self._stopped = False
        self.received = 0
        self._receiver.start()

    def next_batch(self) -> list[Arrival]:
        """Return what has arrived (and a heartbeat now and then); after a stop, the end."""
        if self._on_batch is not None:
            self._on_batch()
        if self._replay:
            return self._replay.take(5000)
        if self._stop_event.is_set() and not self._stopped:
            # Disconnect before the last take: what the receiver acknowledged goes into the
            # dataflow; what it did not stays with the broker's session.
            self._stopped = True
            self._receiver.stop()
        messages, through_ms = self._receiver.take()
        batch: list[Arrival] = [RawMessage(t, p, r) for t, p, r in messages]
        self.received += len(batch)
        if self._stopped and not batch:
            raise StopIteration
        heartbeat = self._heartbeats.due(through_ms)
        if heartbeat is not None:
            batch.append(heartbeat)
        return batch

    def next_awake(self) -> datetime | None:
        """Hand over a batch every ``poll_ms`` (low per-batch cost, bounded latency)."""
        return None if self._stopped or self._replay else _utc_now() + self._poll

    def snapshot(self) -> None:
        """MQTT cannot seek; the persistent session is the resume mechanism."""
        return None

    def close(self) -> None:
        """Disconnect if the dataflow ends for another reason."""
        self._receiver.stop()

    @property
    def counters(self) -> ReceiverCounters:
        """The receiver's counters now."""
        return self._receiver.counters()


class _ProcessPartition(StatefulSourcePartition[Arrival, None]):
    """A receiver in a child process, shipping batches over a pipe."""

    def __init__(
        self,
        settings: ReceiverSettings,
        *,
        stop_event: threading.Event,
        poll_ms: int,
        heartbeat_ms: int,
        batch_size: int,
        failures: list[str],
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        self._on_batch = on_batch
        self._replay = _Replay(settings)  # before the receiver opens a new segment
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe(duplex=False)
        child_control, self._control = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=receiver_main,
            args=(settings, child_conn, child_control),
            name=f"mqtt-receiver-{settings.client_id}",
            daemon=True,
        )
        self._process.start()
        child_conn.close()
        child_control.close()
        self._stop_sent = False
        self._client_id = settings.client_id
        self._stop_event = stop_event
        self._poll = timedelta(milliseconds=poll_ms)
        self._heartbeats = _Heartbeats(heartbeat_ms)
        self._through_ms: int | None = None
        self._batch_size = batch_size
        self._failures = failures
        self._finished = False
        self._full = False
        self.received = 0
        #: The child's receiver counters, as of its last batch (None before the first).
        self.counters: ReceiverCounters | None = None

    def _end(self) -> None:
        self._process.join(10)
        log.info("MQTT source %s finished after %d messages", self._client_id, self.received)
        raise StopIteration

    def _send_stop(self) -> None:
        if not self._stop_sent:
            self._stop_sent = True
            with contextlib.suppress(OSError):  # the child may be gone already
                self._control.send("stop")

    def next_batch(self) -> list[Arrival]:
        """Return the batches shipped so far (and a heartbeat when drained); then the end."""
        if self._on_batch is not None:
            self._on_batch()
        if self._replay:
            return self._replay.take(self._batch_size)
        if self._stop_event.is_set():
            self._send_stop()
        batch: list[Arrival] = []
        while not self._finished and len(batch) < self._batch_size and self._conn.poll():
            try:
                chunk = self._conn.recv()
            except EOFError:
                chunk = None
                if not self._stop_sent:
                    # The receiver died: end the stream cleanly (windows close, sinks
                    # flush) and let the CLI report the failure.
                    reason = f"MQTT receiver process exited ({self._process.exitcode})"
                    log.error("%s; ending the pipeline", reason)
                    self._failures.append(reason)
            if chunk is None:
                self._finished = True
                break
            self._through_ms, messages, counters = chunk
            self.counters = ReceiverCounters(*counters)
            batch.extend(RawMessage(t, p, r) for t, p, r in messages)
        self.received += len(batch)
        self._full = len(batch) >= self._batch_size
        if self._finished and not batch:
            self._end()
        heartbeat = self._heartbeats.due(self._through_ms)  # after the messages it vouches for
        if heartbeat is not None:
            batch.append(heartbeat)
        return batch

    def next_awake(self) -> datetime | None:
        """Hand over a batch every ``poll_ms`` (low per-batch cost, bounded latency)."""
        if self._full or self._finished or self._replay:
            return None
        return _utc_now() + self._poll

    def snapshot(self) -> None:
        """MQTT cannot seek; the persistent session is the resume mechanism."""
        return None

    def close(self) -> None:
        """Stop the child if the dataflow ends for another reason."""
        self._send_stop()
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        self._conn.close()
        self._control.close()


class MqttSource(FixedPartitionedSource[Arrival, None]):
    """Subscribe to one or more topic filters at QoS 1 on a persistent session.

    Args:
        url: Broker URL, ``mqtt://host:port``.
        topic_filter: What to subscribe to: one filter, or several (one subscriber
            client holds them all, and the messages of all arrive in one stream).
        client_id: Stable client id (the session's name); partitions append ``-{i}``.
        stop_event: Set it to end the source (clean shutdown).
        partitions: Subscribers in this process; more than one in the whole cluster uses
            a shared subscription (``$share/{client_id}/{filter}``).
        process_id: This process's index in a Bytewax cluster (``-i``), from 0.
        processes: Processes in the cluster. Each process lists only its own partitions,
            ``mqtt-{process_id * partitions + j}``, so Bytewax builds them there: every
            process subscribes ``partitions`` times and the broker splits the messages.
        username: Broker user name.
        password: Broker password.
        qos: Subscription QoS.
        receiver: ``"process"`` (the subscriber in a child process, the default: it leaves this
            process's GIL to the dataflow) or ``"thread"``.
        batch_size: Most messages handed over per ``next_batch``.
        poll_ms: Interval between two hand-overs, ms.
        heartbeat_ms: Least interval between two :class:`~pipelines.windows.Heartbeat`
            items, ms.
        wal_dir: Durable acknowledgement: the partitions' write-ahead logs live here (one
            folder per partition), replayed on start; ``None``: PUBACK on receipt.
        wal_retention_s: Age at which a sealed log segment is covered and deleted, s.
        wal_segment_s: Age at which a log starts a new segment, s.
        receive_queue: Most messages a receiver holds before the dataflow takes them; at
            it the receiver stops reading its socket (TCP back-pressure, nothing dropped).

    Attributes:
        failures: Why partitions ended early (a receiver process died), for the CLI.

    """

    def __init__(
        self,
        url: str,
        topic_filter: str | Sequence[str],
        *,
        client_id: str,
        stop_event: threading.Event,
        partitions: int = 1,
        username: str | None = None,
        password: str | None = None,
        qos: int = 1,
        receiver: Literal["process", "thread"] = "process",
        batch_size: int = 5000,
        poll_ms: int = 10,
        heartbeat_ms: int = 250,
        wal_dir: str | Path | None = None,
        wal_retention_s: float = 30.0,
        wal_segment_s: float = 5.0,
        receive_queue: int = 10_000,
        process_id: int = 0,
        processes: int = 1,
    ) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        if not 0 <= process_id < processes:
            raise ValueError(f"expected 0 <= process_id < processes, got {process_id}/{processes}")
        if receiver not in ("process", "thread"):
            raise ValueError(f"receiver must be 'process' or 'thread', got {receiver!r}")
        self.host, self.port, self.tls = parse_url(url)
        self.topic_filters: tuple[str, ...] = (
            (topic_filter,) if isinstance(topic_filter, str) else tuple(topic_filter)
        )
        if not self.topic_filters:
            raise ValueError("topic_filter: at least one filter is needed")
        self.client_id = client_id
        self.stop_event = stop_event
        self.partitions = partitions
        self.process_id = process_id
        self.processes = processes
        self.username = username
        self.password = password
        self.qos = qos
        self.receiver = receiver
        self.batch_size = batch_size
        self.poll_ms = poll_ms
        self.heartbeat_ms = heartbeat_ms
        self.wal_dir = None if wal_dir is None else Path(wal_dir)
        self.wal_retention_s = wal_retention_s
        self.wal_segment_s = wal_segment_s
        self.receive_queue = receive_queue
        self.failures: list[str] = []
        #: The partitions built in this process (their counters feed the metrics).
        self.parts: list[_ThreadPartition | _ProcessPartition] = []
        #: ``next_batch`` calls of this process's partitions: the dataflow is running
        #: while it grows, also when no message arrives (systemd's watchdog reads it).
        self.batches = 0

    def _count_batch(self) -> None:
        self.batches += 1

    def list_parts(self) -> list[str]:
        """The partitions of this process, ``mqtt-{process_id * partitions + j}``.

        Bytewax builds a partition on a worker that listed it: listing only this
        process's own keeps one subscriber (or ``partitions``) in every process of a
        cluster, each with its own client id and write-ahead log.
        """
        first = self.process_id * self.partitions
        return [f"mqtt-{first + j}" for j in range(self.partitions)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSourcePartition[Arrival, None]:
        """Start the subscriber of one partition."""
        index = for_part.rsplit("-", 1)[1]
        topic_filters = self.topic_filters
        if self.partitions * self.processes > 1:
            topic_filters = tuple(f"$share/{self.client_id}/{f}" for f in topic_filters)
        settings = ReceiverSettings(
            host=self.host,
            port=self.port,
            tls=self.tls,
            client_id=f"{self.client_id}-{index}",
            topic_filters=topic_filters,
            qos=self.qos,
            username=self.username,
            password=self.password,
            wal_dir=(
                None if self.wal_dir is None else str(self.wal_dir / f"{self.client_id}-{index}")
            ),
            wal_retention_s=self.wal_retention_s,
            wal_segment_s=self.wal_segment_s,
            receive_queue=self.receive_queue,
        )
        part: _ThreadPartition | _ProcessPartition
        if self.receiver == "thread":
            part = _ThreadPartition(
                settings,
                stop_event=self.stop_event,
                poll_ms=self.poll_ms,
                heartbeat_ms=self.heartbeat_ms,
                on_batch=self._count_batch,
            )
        else:
            part = _ProcessPartition(
                settings,
                stop_event=self.stop_event,
                poll_ms=self.poll_ms,
                heartbeat_ms=self.heartbeat_ms,
                batch_size=self.batch_size,
                failures=self.failures,
                on_batch=self._count_batch,
            )
        self.parts.append(part)
        return part


# --------------------------------------------------------------------------- sink


class _NativeSinkPartition(StatelessSinkPartition[tuple[str, bytes]]):
    """One publisher per worker: the native asyncio client on its own loop thread.

    The Bytewax worker hands each batch to the loop thread and goes on; the client keeps
    the QoS 1 delivery rules (in-flight window, bounded queue, resend on reconnect). A QoS
    1 message costs a few µs here against ~70 µs of paho's Python (publish and PUBACK),
    which in a burst of commands after a frequency step was the dataflow's own time.
    """

    def __init__(self, client: AsyncMqttClient, *, qos: int, flush_timeout_s: float) -> None:
        self._client = client
        self._qos = qos
        self._flush_timeout_s = flush_timeout_s
        self._loop = LoopThread(f"mqtt-{client.client_id}")
        self._loop.run(client.start())
        if not self._loop.run(client.wait_connected(flush_timeout_s), flush_timeout_s + 5):
            log.warning("MQTT sink %s: broker not reachable yet; queueing", client.client_id)

    def _publish(self, items: list[tuple[str, bytes]]) -> None:
        for topic, payload in items:
            retain = is_retained_topic(topic)
            self._client.publish(topic, payload, qos=self._qos, retain=retain)

    @property
    def dropped(self) -> int:
        """Messages the client dropped (a full queue drops the oldest; counted there)."""
        return self._client.stats.as_dict()["dropped"]

    def write_batch(self, items: list[tuple[str, bytes]]) -> None:
        """Hand ``(topic, payload)`` items to the loop thread; retained as the contract says."""
        self._loop.call(self._publish, list(items))

    def close(self) -> None:
        """Wait (bounded) until the broker acknowledged what was published, then leave."""
        try:
            self._loop.run(
                self._client.stop(flush_timeout_s=self._flush_timeout_s),
                self._flush_timeout_s + 5,
            )
        finally:
            self._loop.close()
        if self.dropped:
            log.warning("MQTT sink dropped %d messages (outgoing queue full)", self.dropped)


class MqttSink(DynamicSink[tuple[str, bytes]]):
    """Publish ``(topic, payload)`` items; one client per worker.

    Args:
        url: Broker URL.
        client_id: Prefix of the client ids (``-w{worker}`` is appended).
        username: Broker user name.
        password: Broker password.
        qos: Publish QoS.
        queue_limit: Messages kept in memory while the broker is unreachable.
        flush_timeout_s: How long ``close`` waits for acknowledgements.

    """

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        qos: int = 1,
        queue_limit: int = 100_000,
        flush_timeout_s: float = 5.0,
    ) -> None:
        parse_url(url)  # fail early on a bad URL
        self.url = url
        self.client_id = client_id
        self.username = username
        self.password = password
        self.qos = qos
        self.queue_limit = queue_limit
        self.flush_timeout_s = flush_timeout_s
        #: The clients of the partitions built in this process (for the metrics).
        self.clients: list[AsyncMqttClient] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _NativeSinkPartition:
        """Start the publisher of one worker."""
        client = AsyncMqttClient(
            self.url,
            f"{self.client_id}-w{worker_index}",
            username=self.username,
            password=self.password,
            clean_session=True,
            queue_limit=self.queue_limit,
        )
        self.clients.append(client)
        return _NativeSinkPartition(client, qos=self.qos, flush_timeout_s=self.flush_timeout_s)
