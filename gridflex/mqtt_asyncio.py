"""A native asyncio MQTT 3.1.1 client for the collectors' hot path (no paho, no thread).

Same delivery rules and interface as ``gridflex.mqtt.MqttClient`` (paho on its own thread):
QoS 1 and a persistent session by default, a retained last will, a bounded outgoing queue
that drops the oldest (and counts) past ``queue_limit``, reconnect with exponential
backoff, and a clean stop after a bounded flush. It is an ``asyncio.Protocol`` on the
caller's loop; the packets come from the pure codec ``gridflex.mqtt_wire``.

Why not paho here: the Modbus collector publishes 5,000 telemetry messages a second at
1,000 inverters, from one process, on one core. paho cost ~90 us of CPU per QoS 1 message
even when driven from the collector's own loop (profiled with py-spy: ``publish()`` builds
an ``MQTTMessage`` and an ``MQTTMessageInfo`` with a ``threading.Condition``; reading a
4-byte PUBACK takes three ``recv`` calls and builds MQTT 5 ``ReasonCode``/``Properties``
objects even on 3.1.1) — 35 % of the collector's CPU, the difference between meeting the
200 ms schedule and missing it. Here a publish is one packet built with ``bytes.join`` and
appended to a list; once per loop pass the list goes out in one ``transport.write``; a
read of the socket parses every PUBACK in it. It is the client of every hop of the data
path (collectors, CSMS, pipeline, control); paho (``gridflex.mqtt``) serves the demo's
terminal view and the tools, and is the tests' reference and the benchmarks' baseline
(``bench/baselines.py``).

Delivery, per MQTT 3.1.1:

- QoS 1 messages get a packet identifier when they go out and stay "in flight" until
  their PUBACK; on reconnect the in-flight ones are sent again first (DUP set, same
  identifier, 4.4), then the queue, so the order holds and nothing is lost (at least once).
- ``max_inflight`` bounds the messages awaiting PUBACK (0: up to 65,278 of the protocol's
  65,535 identifiers; the rest are for SUBSCRIBEs);
  the rest wait in the queue. ``queue_limit`` bounds queue + in flight; at it the OLDEST
  queued message is dropped for the new one (the freshest readings matter most after an
  outage). Only when all ``queue_limit`` are in flight (or for QoS 0 while disconnected)
  is the new one dropped and ``publish`` returns False. Every drop is counted in
  ``stats.dropped``; the first of an outage is a WARNING, and the next CONNACK logs
  "dropped N messages while the broker was unreachable for X s".
- Receive flow control: ``pause_reading()`` / ``resume_reading()`` (see
  ``gridflex.mqtt_inbound``): TCP back-pressure, counted in ``stats.read_pauses``.
- Keepalive: a PINGREQ every ``keepalive_s``; no PINGRESP by the next one closes the
  connection (and reconnects), unless reading is paused.
- ``stop()`` sends DISCONNECT, so the broker discards the last will.
- ``manual_ack=True`` withholds the PUBACK of each received QoS 1 message until the owner
  says the message is safe (the pipeline: once it is in its write-ahead log):
  :meth:`AsyncMqttClient.take_held_acks` then :meth:`AsyncMqttClient.send_acks`. PUBACKs
  held when a connection drops are forgotten: the broker redelivers those messages.

Hostile or broken input from the broker (oversized, malformed or truncated packets)
closes the connection (4.8); see ``gridflex.mqtt_inbound``.

Errors the caller must see (``gridflex.mqtt_subscriptions``):

- ``subscribe`` raises ``ValueError`` for an invalid topic filter (naming the filter and
  the rule); it is never sent. SUBSCRIBE packet ids stay reserved until their SUBACK.
- A refused subscription (SUBACK 0x80) raises ``SubscriptionRefused`` from
  ``await wait_subscribed()``; each refusal, re-subscriptions included, also goes to
  ``on_error`` and ``stats.refused_subscriptions``.
- A lost persistent session (CONNACK session present 0 with ``clean_session=False`` for a
  client with subscriptions after a first connection, or from the first one with
  ``expect_session=True``: what the broker queued meanwhile is gone) goes to ``on_error``
  as ``SessionLost`` and to ``stats.sessions_lost``. ``on_error`` runs on the loop;
  without one, ERROR log lines.
- A password without a user name is refused at construction (3.1.2.9).

All methods except ``stats`` must be called from the loop's thread; message callbacks run
on the loop (keep them short).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time

from gridflex.mqtt import MessageCallback, MqttStats, parse_url
from gridflex.mqtt_inbound import HeldAcks, Inbound, _Connection
from gridflex.mqtt_subscriptions import (
    SUBSCRIBE_IDS,
    ErrorCallback,
    MqttClientError,
    SessionLost,
    SubscriptionRefused,
    Subscriptions,
)
from gridflex.mqtt_wire import (
    CONNACK_REASONS,
    DEFAULT_MAX_PACKET_SIZE,
    DISCONNECT_PACKET,
    PINGREQ_PACKET,
    MalformedPacket,
    decode_connack,
    encode_connect,
    encode_publish,
    encode_subscribe,
    encode_topic,
    publish_header,
    with_dup,
)

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "AsyncMqttClient",
    "ErrorCallback",
    "HeldAcks",
    "MqttClientError",
    "SessionLost",
    "SubscriptionRefused",
]

log = logging.getLogger(__name__)

_MAX_MID = 0xFFFF
_CONNECT_TIMEOUT_S = 10.0
_STOP_CLOSE_TIMEOUT_S = 2.0
#: Publishes in flight at most: the other identifiers are for SUBSCRIBEs, and one stays
#: free so ``_next_mid`` always finds one.
_U16_MAX_INFLIGHT = _MAX_MID - 1 - SUBSCRIBE_IDS
#: While connected, drops past the first of an outage are logged once in this many.
_DROP_LOG_EVERY = 1000


class AsyncMqttClient(Inbound):
    """An MQTT 3.1.1 client on the running asyncio loop, configured for gridflex.

    Parameters are those of ``gridflex.mqtt.MqttClient``, plus ``max_packet_size`` (bytes,
    the largest packet accepted from the broker), ``on_error`` (called on the loop with a
    ``SubscriptionRefused`` or ``SessionLost``) and ``expect_session`` (a persistent
    session should already exist at the first connection). ``await start()`` (returns at
    once; connects in the background and keeps reconnecting until ``stop()``),
    ``await wait_connected(timeout_s)``, ``publish(...) -> bool`` (False: dropped, queue
    full), ``subscribe(topic_filter, callback)``, ``await wait_subscribed(timeout_s)``,
    ``await flush(timeout_s)``, ``await stop(flush_timeout_s)``, ``stats``.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        will: tuple[str, bytes] | None = None,
        clean_session: bool = False,
        queue_limit: int = 100_000,
        keepalive_s: int = 30,
        max_inflight: int = 100,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        on_error: ErrorCallback | None = None,
        expect_session: bool = False,
        manual_ack: bool = False,
    ) -> None:
        if password is not None and username is None:
            raise ValueError("a password needs a user name (MQTT 3.1.1 section 3.1.2.9)")
        if max_packet_size < 2:
            raise ValueError(f"max_packet_size {max_packet_size}: at least 2 bytes")
        self.host, self.port, tls = parse_url(url)
        self.url = url
        self.client_id = client_id
        self.stats = MqttStats()
        self._connect_packet = encode_connect(
            client_id,
            clean_session=clean_session,
            keepalive_s=keepalive_s,
            will=None if will is None else (will[0], will[1], 1, True),
            username=username,
            password=password,
        )
        self._ssl = ssl.create_default_context() if tls else None
        self._clean_session = clean_session
        self._expect_session = expect_session and not clean_session
        self._max_packet_size = max_packet_size
        self._on_error = on_error
        self._keepalive_s = keepalive_s
        self._queue_limit = queue_limit
        self._max_inflight = min(max_inflight or _U16_MAX_INFLIGHT, _U16_MAX_INFLIGHT)
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._next_delay_s = reconnect_min_s
        #: Backoff after a protocol error: grows with each one, so a broker that sends
        #: garbage right after CONNACK is not hammered at the minimum delay.
        self._penalty_s = 0.0
        self._topics: dict[str, bytes] = {}  # topic -> encoded, for repeated topics
        # (header, topic, payload) waiting to go out; in flight: mid -> packet sent
        self._queue: collections.deque[tuple[int, bytes, bytes]] = collections.deque()
        self._inflight: dict[int, bytes] = {}
        self._out: list[bytes] = []
        self._mid = 0
        self._subs = Subscriptions()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: _Connection | None = None
        self._connected = False
        self._connected_event: asyncio.Event | None = None
        self._closed: asyncio.Event | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._ping: asyncio.TimerHandle | None = None
        self._connack_timer: asyncio.TimerHandle | None = None
        self._ping_outstanding = False
        self._write_scheduled = False
        self._started = False
        self._stopping = False
        self._manual_ack = manual_ack
        self._held_acks: list[int] = []  # withheld PUBACKs (manual_ack), this connection's
        self._read_paused = False  # pause_reading(): no PUBLISH handed over
        #: Messages dropped since the last CONNACK, and since when the broker is away.
        self._outage_dropped = 0
        self._down_since = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start connecting in the background on the running loop; returns at once."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._connected_event = asyncio.Event()
        self._closed = asyncio.Event()
        self._closed.set()
        self._started = True
        self._stopping = False
        self._connect()

    async def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """Wait until connected (True) or until ``timeout_s`` passes (False)."""
        if self._connected_event is None:
            return False
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    @property
    def connected(self) -> bool:
        """Whether the client is connected (CONNACK received) right now."""
        return self._connected

    def pending(self) -> int:
        """Messages published but not yet acknowledged by the broker."""
        with self.stats.lock:
            return self.stats.published - self.stats.acknowledged

    async def wait_subscribed(self, timeout_s: float = 10.0) -> bool:
        """Wait until the broker has answered every subscription on the current connection.

        True when all are granted; False when ``timeout_s`` passes first (not connected,
        or no SUBACK yet). Raises ``SubscriptionRefused`` for the first refused filter.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            if self._connected and self._subs.answered():
                refused = self._subs.first_refused()
                if refused is not None:
                    raise SubscriptionRefused(self.client_id, refused)
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)

    async def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait until every published message is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.pending() > 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Drain the outgoing queue (bounded by ``flush_timeout_s``) and disconnect cleanly.

        A clean DISCONNECT does not fire the last will.
        """
        if not self._started:
            return
        if (self._connected and not await self.flush(flush_timeout_s)) or self.pending():
            log.warning(
                "mqtt %s: %d messages not acknowledged at stop", self.client_id, self.pending()
            )
        self._stopping = True
        for handle in (self._retry, self._ping, self._connack_timer):
            if handle is not None:
                handle.cancel()
        self._retry = self._ping = self._connack_timer = None
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connecting
            self._connecting = None
        conn = self._conn
        if conn is not None and conn.transport is not None:
            self._write()
            conn.transport.write(DISCONNECT_PACKET)
            conn.transport.close()  # after the buffer is written
            assert self._closed is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), _STOP_CLOSE_TIMEOUT_S)
            if conn.transport is not None:
                conn.transport.abort()
        self._connected = False
        self._started = False

    # ------------------------------------------------------------------ messages

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue one message; False when it was dropped.

        With the queue full (queue + in flight at ``queue_limit``) the OLDEST queued
        message is dropped to make room, and this one is queued (True). Only when every
        message is in flight, or for QoS 0 while disconnected, is this one dropped
        (False). Every drop is counted in ``stats.dropped`` and logged (``_dropped``).
        """
        header = publish_header(qos, retain)
        encoded = self._topics.get(topic)
        if encoded is None:
            encoded = encode_topic(topic)
            if len(self._topics) < 100_000:
                self._topics[topic] = encoded
        if qos == 0 and not self._connected:
            self._dropped()
            return False
        if len(self._queue) + len(self._inflight) >= self._queue_limit:
            if not self._queue:
                self._dropped()
                return False
            self._queue.popleft()  # never sent: it leaves published - acknowledged too
            with self.stats.lock:
                self.stats.published -= 1
            self._dropped()
        with self.stats.lock:
            self.stats.published += 1
        if (
            self._connected
            and not self._queue
            and len(self._inflight) < self._max_inflight
            and not self._conn_paused()
        ):
            self._send(header, encoded, payload)
        else:
            self._queue.append((header, encoded, payload))
        return True

    def subscribe(self, topic_filter: str, callback: MessageCallback, qos: int = 1) -> None:
        """Call ``callback(topic, payload)`` on the loop for each message on ``topic_filter``.

        The subscription is renewed on every reconnect. QoS 0 or 1. An invalid filter
        raises ``ValueError`` naming it and the rule it breaks, and is never sent; a filter
        the broker refuses surfaces through ``wait_subscribed`` and ``on_error``.
        """
        can_send = self._subs.add(topic_filter, qos, callback)
        if self._connected:
            if can_send:
                self._send_subscribe([(topic_filter, qos)])
            else:
                self._subs.defer(topic_filter, qos)

    # ------------------------------------------------------------------ sending

    def _conn_paused(self) -> bool:
        return self._conn is not None and self._conn.paused

    def _next_mid(self) -> int:
        mid = self._mid
        inflight = self._inflight
        subscribing = self._subs.in_flight
        while True:
            mid = mid + 1 if mid < _MAX_MID else 1
            if mid not in inflight and mid not in subscribing:
                self._mid = mid
                return mid

    def _send_subscribe(self, filters: list[tuple[str, int]]) -> None:
        mid = self._next_mid()
        self._subs.sent(mid, filters)
        self._queue_packet(encode_subscribe(mid, filters))

    def _send(self, header: int, topic: bytes, payload: bytes) -> None:
        """Put one PUBLISH on the connection (QoS 1: in flight until its PUBACK)."""
        if header & 0x02:
            mid = self._next_mid()
            packet = encode_publish(header, topic, payload, mid)
            self._inflight[mid] = packet
        else:
            packet = encode_publish(header, topic, payload)
            with self.stats.lock:
                self.stats.acknowledged += 1  # QoS 0: done once handed to the connection
        self._queue_packet(packet)

    def _queue_packet(self, packet: bytes) -> None:
        self._out.append(packet)
        if not self._write_scheduled:
            self._write_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._write)

    def _write(self) -> None:
        """Write every packet of this loop pass in one go."""
        self._write_scheduled = False
        out = self._out
        if not out:
            return
        conn = self._conn
        if conn is None or conn.transport is None or conn.transport.is_closing():
            out.clear()  # in-flight packets are re-sent on reconnect; the rest are queued
            return
        conn.transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _pump(self) -> None:
        """Move queued messages into flight while the window and the socket allow."""
        queue = self._queue
        limit = self._max_inflight
        while queue and self._connected and len(self._inflight) < limit:
            if self._conn_paused():
                return
            self._send(*queue.popleft())

    def _dropped(self) -> None:
        """Count one dropped message; WARNING at the first of an outage, then now and then."""
        with self.stats.lock:
            self.stats.dropped += 1
            total = self.stats.dropped
        self._outage_dropped += 1
        if self._outage_dropped == 1:
            where = "broker connected but slow" if self._connected else "broker unreachable"
            log.warning(
                "mqtt %s: outgoing queue full (%d messages, %s): dropping the oldest "
                "(%d dropped since start)",
                self.client_id,
                self._queue_limit,
                where,
                total,
            )
        elif self._outage_dropped % _DROP_LOG_EVERY == 0:
            log.warning(
                "mqtt %s: %d messages dropped in this outage (%d since start)",
                self.client_id,
                self._outage_dropped,
                total,
            )

    # ------------------------------------------------------------------ connecting

    def _connect(self) -> None:
        self._retry = None
        if self._stopping or self._connecting is not None or self._conn is not None:
            return
        assert self._loop is not None
        self._connecting = self._loop.create_task(self._open())

    async def _open(self) -> None:
        assert self._loop is not None
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                await self._loop.create_connection(
                    lambda: _Connection(self, self._max_packet_size),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                )
        except (OSError, TimeoutError) as exc:
            self._connecting = None
            self._schedule_reconnect(f"{type(exc).__name__}: {exc}")
            return
        self._connecting = None

    def _schedule_reconnect(self, reason: str) -> None:
        if self._stopping or not self._started or self._retry is not None:
            return
        assert self._loop is not None
        delay_s = max(self._next_delay_s, self._penalty_s)
        self._next_delay_s = min(delay_s * 2, self._reconnect_max_s)
        log.info("mqtt %s: %s; reconnecting in %.1f s", self.client_id, reason, delay_s)
        self._retry = self._loop.call_later(delay_s, self._connect)

    def _connection_made(self, conn: _Connection) -> None:
        assert self._loop is not None and self._closed is not None
        self._conn = conn
        self._closed.clear()
        assert conn.transport is not None
        conn.transport.write(self._connect_packet)
        self._connack_timer = self._loop.call_later(_CONNECT_TIMEOUT_S, self._connack_missing)

    def _connack_missing(self) -> None:
        self._connack_timer = None
        conn = self._conn
        if conn is not None and conn.transport is not None and not self._connected:
            log.warning("mqtt %s: no CONNACK from %s:%d", self.client_id, self.host, self.port)
            conn.transport.abort()

    def _on_connack(self, conn: _Connection, first: int, body: bytes) -> None:
        if self._connack_timer is not None:
            self._connack_timer.cancel()
            self._connack_timer = None
        if self._connected:
            raise MalformedPacket("a second CONNACK on one connection")
        session_present, code = decode_connack(first, body)
        assert conn.transport is not None
        if code != 0:
            log.warning(
                "mqtt %s: connection refused by %s:%d: %s",
                self.client_id,
                self.host,
                self.port,
                CONNACK_REASONS.get(code, f"return code {code}"),
            )
            conn.transport.close()
            return
        with self.stats.lock:
            # A session matters to a subscriber (the broker queues for it), not to a client
            # that only publishes (its unacknowledged messages are re-sent anyway).
            expected = self._expect_session or (
                not self._clean_session and bool(self.stats.connects and self._subs.filters)
            )
            lost = expected and not session_present
            self.stats.connects += 1
            self.stats.sessions_lost += lost
        log.info("mqtt %s: connected to %s:%d", self.client_id, self.host, self.port)
        if self._outage_dropped:
            log.warning(
                "mqtt %s: dropped %d messages while the broker was unreachable for %.1f s",
                self.client_id,
                self._outage_dropped,
                time.monotonic() - self._down_since,
            )
            self._outage_dropped = 0
        self._next_delay_s = self._reconnect_min_s
        self._connected = True
        if self._subs.filters:
            self._send_subscribe(self._subs.everything())
        for packet in self._inflight.values():  # unacknowledged: again, same id, DUP (4.4)
            self._queue_packet(with_dup(packet))
        self._pump()
        self._arm_ping()
        assert self._connected_event is not None
        self._connected_event.set()
        if lost:
            self._report(
                SessionLost(
                    f"mqtt {self.client_id}: the broker at {self.host}:{self.port} has no "
                    "session for this client id (CONNACK session present 0): what it "
                    "queued for the client while it was away is lost"
                )
            )

    def _report(self, error: MqttClientError) -> None:
        """Hand ``error`` to ``on_error`` (logged at ERROR without one)."""
        if self._on_error is None:
            log.error("%s", error)
            return
        try:
            self._on_error(error)
        except Exception:  # the caller's bug must not break the connection
            log.exception("mqtt %s: on_error callback failed on %s", self.client_id, error)

    def _connection_lost(self, conn: _Connection, exc: Exception | None) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._out.clear()
        self._subs.connection_lost()  # re-subscribed, with new ids, on the next CONNACK
        if not conn.protocol_error:
            self._penalty_s = 0.0
        self._held_acks = []  # the broker redelivers these on the next session
        was_connected = self._connected
        self._connected = False
        if was_connected:
            self._down_since = time.monotonic()
        for handle in (self._ping, self._connack_timer):
            if handle is not None:
                handle.cancel()
        self._ping = self._connack_timer = None
        self._ping_outstanding = False  # a new connection starts its own keepalive
        if self._connected_event is not None:
            self._connected_event.clear()
        if self._closed is not None:
            self._closed.set()
        if was_connected:
            with self.stats.lock:
                self.stats.disconnects += 1
            if not self._stopping:
                log.warning("mqtt %s: disconnected (%s)", self.client_id, exc or "closed by peer")
        self._schedule_reconnect(f"connection lost ({exc or 'closed'})")

    # ------------------------------------------------------------------ keepalive

    def _arm_ping(self) -> None:
        if self._keepalive_s > 0:
            assert self._loop is not None
            self._ping = self._loop.call_later(self._keepalive_s, self._keepalive)

    def _keepalive(self) -> None:
        self._ping = None
        conn = self._conn
        if conn is None or conn.transport is None:
            return
        if self._ping_outstanding and not (self._read_paused or conn.backlog):
            log.warning("mqtt %s: no PINGRESP within %d s", self.client_id, self._keepalive_s)
            self._ping_outstanding = False
            conn.transport.abort()
            return
        self._ping_outstanding = True
        self._queue_packet(PINGREQ_PACKET)
        self._arm_ping()
