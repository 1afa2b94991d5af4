"""MQTT at the edges of the dataflow: a paho-fed Bytewax source and a publishing sink.

Source. :class:`MqttSource` is a ``FixedPartitionedSource``; each partition runs one paho
client (its network loop in paho's thread), which puts messages on a
``queue.SimpleQueue`` from ``on_message``; ``next_batch`` drains it without blocking.
Subscriptions are QoS 1 on a persistent session (MQTT 3.1.1 ``clean_session=False`` with a
stable client id), so the broker keeps what arrives while the pipeline is down. With more
than one partition each subscribes through a shared subscription
(``$share/{group}/{filter}``) so the broker spreads messages over them.

Stopping. A ``threading.Event`` (set by the CLI's signal handler) ends the partitions: the
client disconnects first (nothing more is acknowledged), the queue is drained into the
dataflow, then the partition raises ``StopIteration``. The dataflow then completes on
finite input, so every window closes and every sink is closed (flushed).

Sink. :class:`MqttSink` takes ``(topic, payload)`` pairs and publishes them at QoS 1
through the project's :class:`gridflex.mqtt.MqttClient` (bounded outgoing queue); on close
it waits (bounded) until the broker has acknowledged them.

The source uses paho directly rather than ``MqttClient``: it needs a shared subscription
for several partitions (``MqttClient.subscribe`` routes by ``message_callback_add``, which
does not match ``$share/...`` filters) and control over the disconnect-then-drain order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from gridflex.mqtt import MqttClient, parse_url
from pipelines.clock import utc_now
from pipelines.validate import RawMessage

__all__ = ["MqttSink", "MqttSource"]

log = logging.getLogger(__name__)


def _new_client(
    url: str, client_id: str, *, username: str | None, password: str | None
) -> tuple[mqtt.Client, str, int]:
    host, port, tls = parse_url(url)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=False,
        protocol=mqtt.MQTTv311,
    )
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set()
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client, host, port


def _epoch_ms() -> int:
    return time.time_ns() // 1_000_000


# --------------------------------------------------------------------------- source


class _MqttSourcePartition(StatefulSourcePartition[RawMessage, None]):
    """One paho subscriber feeding the dataflow (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        topic_filter: str,
        qos: int,
        username: str | None,
        password: str | None,
        stop_event: threading.Event,
        batch_size: int,
        poll_ms: int,
        clock_ms: Callable[[], int],
    ) -> None:
        self._queue: queue.SimpleQueue[RawMessage] = queue.SimpleQueue()
        self._topic_filter = topic_filter
        self._qos = qos
        self._stop_event = stop_event
        self._batch_size = batch_size
        self._poll = timedelta(milliseconds=poll_ms)
        self._clock_ms = clock_ms
        self._stopped = False
        self._full = False
        self.received = 0
        self._client, host, port = _new_client(url, client_id, username=username, password=password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.connect_async(host, port, keepalive=30)
        self._client.loop_start()
        log.info("MQTT source %s subscribing to %s at %s", client_id, topic_filter, url)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT source: connection refused: %s", reason)
            return
        log.info("MQTT source connected (session present: %s)", flags.session_present)
        client.subscribe(self._topic_filter, qos=self._qos)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if not self._stopped:
            log.warning("MQTT source disconnected (%s); paho reconnects", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put(RawMessage(msg.topic, bytes(msg.payload), self._clock_ms()))

    def _drain(self) -> list[RawMessage]:
        batch: list[RawMessage] = []
        try:
            while len(batch) < self._batch_size:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def next_batch(self) -> list[RawMessage]:
        """Return what has arrived; after a stop, the rest of the queue, then the end."""
        if self._stop_event.is_set() and not self._stopped:
            self._shutdown_client()
        batch = self._drain()
        self.received += len(batch)
        self._full = len(batch) >= self._batch_size
        if self._stopped and not batch:
            log.info("MQTT source %s finished after %d messages", self._topic_filter, self.received)
            raise StopIteration
        return batch

    def _shutdown_client(self) -> None:
        # Disconnect before the last drain: what paho acknowledged is in the queue and
        # goes into the dataflow; what it did not stays with the broker's session.
        self._stopped = True
        self._client.disconnect()
        self._client.loop_stop()

    def next_awake(self) -> datetime | None:
        """Poll again at once after a full batch, else ``poll_ms`` later.

        Handing the dataflow a batch every few milliseconds rather than whatever arrived
        since the last call keeps Bytewax's per-batch cost low and leaves the GIL to
        paho's network thread in between; it adds at most ``poll_ms`` of latency.
        """
        if self._full or self._stopped:
            return None
        return utc_now() + self._poll

    def snapshot(self) -> None:
        """MQTT cannot seek; the persistent session is the resume mechanism."""
        return None

    def close(self) -> None:
        """Stop the client if the dataflow ends for another reason."""
        if not self._stopped:
            self._shutdown_client()


class MqttSource(FixedPartitionedSource[RawMessage, None]):
    """Subscribe to a topic filter at QoS 1 on a persistent session.

    Args:
        url: Broker URL, ``mqtt://host:port``.
        topic_filter: What to subscribe to.
        client_id: Stable client id (the session's name); partitions append ``-{i}``.
        stop_event: Set it to end the source (clean shutdown).
        partitions: Subscribers; more than one uses a shared subscription.
        username: Broker user name.
        password: Broker password.
        qos: Subscription QoS.
        batch_size: Most messages handed over per ``next_batch``.
        poll_ms: Interval between two hand-overs of what arrived, ms.
        clock_ms: Wall clock for ``received_ms`` (UTC epoch ms).

    """

    def __init__(
        self,
        url: str,
        topic_filter: str,
        *,
        client_id: str,
        stop_event: threading.Event,
        partitions: int = 1,
        username: str | None = None,
        password: str | None = None,
        qos: int = 1,
        batch_size: int = 5000,
        poll_ms: int = 10,
        clock_ms: Callable[[], int] = _epoch_ms,
    ) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        parse_url(url)  # fail early on a bad URL
        self.url = url
        self.topic_filter = topic_filter
        self.client_id = client_id
        self.stop_event = stop_event
        self.partitions = partitions
        self.username = username
        self.password = password
        self.qos = qos
        self.batch_size = batch_size
        self.poll_ms = poll_ms
        self.clock_ms = clock_ms

    def list_parts(self) -> list[str]:
        """Partition names ``mqtt-0`` ... (each worker can reach the broker)."""
        return [f"mqtt-{i}" for i in range(self.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _MqttSourcePartition:
        """Start the subscriber of one partition."""
        index = for_part.rsplit("-", 1)[1]
        topic_filter = self.topic_filter
        if self.partitions > 1:
            topic_filter = f"$share/{self.client_id}/{self.topic_filter}"
        return _MqttSourcePartition(
            self.url,
            client_id=f"{self.client_id}-{index}",
            topic_filter=topic_filter,
            qos=self.qos,
            username=self.username,
            password=self.password,
            stop_event=self.stop_event,
            batch_size=self.batch_size,
            poll_ms=self.poll_ms,
            clock_ms=self.clock_ms,
        )


# --------------------------------------------------------------------------- sink


class _MqttSinkPartition(StatelessSinkPartition[tuple[str, bytes]]):
    """One publisher per worker (a :class:`gridflex.mqtt.MqttClient`, clean session)."""

    def __init__(self, client: MqttClient, *, qos: int, flush_timeout_s: float) -> None:
        self._client = client
        self._qos = qos
        self._flush_timeout_s = flush_timeout_s
        self.dropped = 0
        self._client.start()
        if not self._client.wait_connected(flush_timeout_s):
            log.warning("MQTT sink %s: broker not reachable yet; queueing", client.client_id)

    def write_batch(self, items: list[tuple[str, bytes]]) -> None:
        """Publish each ``(topic, payload)``; a full outgoing queue drops (counted)."""
        for topic, payload in items:
            if not self._client.publish(topic, payload, qos=self._qos):
                self.dropped += 1

    def close(self) -> None:
        """Wait (bounded) until the broker acknowledged what was published, then leave."""
        if self._client.pending() > 0 and not self._client.connected:
            # MqttClient.stop only flushes while connected: give a reconnect a chance.
            self._client.wait_connected(self._flush_timeout_s)
        self._client.stop(flush_timeout_s=self._flush_timeout_s)
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

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _MqttSinkPartition:
        """Start the publisher of one worker."""
        client = MqttClient(
            self.url,
            f"{self.client_id}-w{worker_index}",
            username=self.username,
            password=self.password,
            clean_session=True,
            queue_limit=self.queue_limit,
        )
        return _MqttSinkPartition(client, qos=self.qos, flush_timeout_s=self.flush_timeout_s)
