"""MQTT client wrapper over paho-mqtt 2.x with gridflex's delivery rules.

- QoS 1 and a persistent session (``clean_session=False``) by default, so the broker keeps
  what a subscriber missed while it was away and re-delivers unacknowledged messages.
- A retained last will (the collector's ``online: false`` presence).
- Reconnect with exponential backoff (paho's own loop; no home-made reconnect loop).
- A bounded outgoing queue: while the broker is unreachable messages wait in memory up to
  ``queue_limit``; past that ``publish`` drops the NEW message, counts it and returns
  False, so memory never grows without bound. This differs from the native client
  (``gridflex.mqtt_asyncio``, production), which drops the OLDEST queued message: paho's
  queue is internal. This client is the tests' reference oracle and the benchmarks'
  baseline, not a production path for bounded-queue behaviour.
- Clean shutdown: ``stop()`` waits for the queue to drain (bounded), then disconnects, which
  does not fire the last will.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from gridflex.mqtt_wire import validate_filter

__all__ = [
    "MessageCallback",
    "MqttClient",
    "MqttStats",
    "open_session",
    "parse_url",
    "plain_filter",
]

log = logging.getLogger(__name__)

MessageCallback = Callable[[str, bytes], None]


@dataclass
class MqttStats:
    """Counters of one client, safe to read from any thread."""

    published: int = 0
    acknowledged: int = 0
    dropped: int = 0
    received: int = 0
    connects: int = 0
    disconnects: int = 0
    #: Connections closed because the broker sent a malformed packet (not MQTT 3.1.1).
    malformed: int = 0
    #: Connections closed because a packet exceeded the client's maximum packet size.
    oversized: int = 0
    #: Subscriptions the broker refused (SUBACK 0x80), counted per refusal.
    refused_subscriptions: int = 0
    #: Persistent sessions the broker no longer had (session present 0 where expected).
    sessions_lost: int = 0
    #: Times the owner paused reading (receive queue full; native asyncio client only).
    read_pauses: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, int]:
        """Snapshot of the counters."""
        with self.lock:
            return {
                "published": self.published,
                "acknowledged": self.acknowledged,
                "dropped": self.dropped,
                "received": self.received,
                "connects": self.connects,
                "disconnects": self.disconnects,
                "malformed": self.malformed,
                "oversized": self.oversized,
                "refused_subscriptions": self.refused_subscriptions,
                "sessions_lost": self.sessions_lost,
                "read_pauses": self.read_pauses,
            }


def parse_url(url: str) -> tuple[str, int, bool]:
    """Split ``mqtt://host:port`` / ``mqtts://host:port`` into host, port and TLS flag."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"MQTT URL {url!r}: expected mqtt://host[:port] or mqtts://host[:port]")
    tls = parts.scheme == "mqtts"
    return parts.hostname, parts.port or (8883 if tls else 1883), tls


def plain_filter(topic_filter: str) -> str:
    """The filter part of a shared subscription ``$share/{group}/{filter}``; others as is.

    Messages of a shared subscription arrive with their own topic, which the bare filter
    matches, not the ``$share/...`` string.
    """
    if topic_filter.startswith("$share/"):
        return topic_filter.split("/", 2)[2]
    return topic_filter


class MqttClient:
    """A paho client configured for gridflex (see the module docstring).

    Parameters
    ----------
    url : str
        ``mqtt://host:port`` or ``mqtts://host:port``.
    client_id : str
        Stable id: with a persistent session the broker keeps state per client id.
    will : tuple of (topic, payload), optional
        Published retained at QoS 1 by the broker if the connection dies.
    queue_limit : int
        Most messages kept while the broker is unreachable or slow.
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
    ) -> None:
        if password is not None and username is None:
            raise ValueError("a password needs a user name (MQTT 3.1.1 section 3.1.2.9)")
        self.host, self.port, tls = parse_url(url)
        self.url = url
        self.client_id = client_id
        self.stats = MqttStats()
        self._keepalive_s = keepalive_s
        self._subs: dict[str, tuple[int, MessageCallback]] = {}
        self._connected = threading.Event()
        self._started = False
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls:
            self._client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        if will is not None:
            self._client.will_set(will[0], will[1], qos=1, retain=True)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(queue_limit)
        self._client.reconnect_delay_set(
            min_delay=max(1, round(reconnect_min_s)), max_delay=max(1, round(reconnect_max_s))
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_unmatched

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect in the background; returns at once and keeps reconnecting until stop()."""
        if self._started:
            return
        self._started = True
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive_s)
        self._client.loop_start()

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """Block until connected (True) or until ``timeout_s`` passes (False)."""
        return self._connected.wait(timeout_s)

    @property
    def connected(self) -> bool:
        """Whether the client is connected right now."""
        return self._connected.is_set()

    def pending(self) -> int:
        """Messages published but not yet acknowledged by the broker."""
        with self.stats.lock:
            return self.stats.published - self.stats.acknowledged

    def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait until every published message is acknowledged; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.pending() > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Drain the outgoing queue (bounded by ``flush_timeout_s``) and disconnect cleanly."""
        if not self._started:
            return
        if (self.connected and not self.flush(flush_timeout_s)) or self.pending():
            log.warning(
                "mqtt %s: %d messages not acknowledged at stop", self.client_id, self.pending()
            )
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    # ------------------------------------------------------------------ messages

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue one message; False when the bounded queue is full and it was dropped."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            with self.stats.lock:
                self.stats.dropped += 1
                dropped = self.stats.dropped
            if dropped == 1 or dropped % 1000 == 0:
                log.warning(
                    "mqtt %s: outgoing queue full, %d messages dropped", self.client_id, dropped
                )
            return False
        # MQTT_ERR_NO_CONN with QoS > 0: paho keeps the message and sends it on reconnect.
        if info.rc == mqtt.MQTT_ERR_NO_CONN and qos == 0:
            with self.stats.lock:
                self.stats.dropped += 1
            return False
        with self.stats.lock:
            self.stats.published += 1
        return True

    def subscribe(self, topic_filter: str, callback: MessageCallback, qos: int = 1) -> None:
        """Call ``callback(topic, payload)`` for each message on ``topic_filter``.

        The subscription is renewed on every reconnect. Callbacks run on paho's network
        thread: keep them short (hand work to a queue). An invalid filter raises
        ``ValueError`` here and is never sent.
        """
        validate_filter(topic_filter)

        def _deliver(_client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
            with self.stats.lock:
                self.stats.received += 1
            callback(msg.topic, bytes(msg.payload))

        self._subs[topic_filter] = (qos, callback)
        self._client.message_callback_add(plain_filter(topic_filter), _deliver)
        if self.connected:
            self._client.subscribe(topic_filter, qos=qos)

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason_code: mqtt.ReasonCode,
        _properties: object,
    ) -> None:
        if reason_code.is_failure:
            log.warning(
                "mqtt %s: connection refused by %s:%d: %s",
                self.client_id,
                self.host,
                self.port,
                reason_code,
            )
            return
        with self.stats.lock:
            self.stats.connects += 1
        log.info("mqtt %s: connected to %s:%d", self.client_id, self.host, self.port)
        for topic_filter, (qos, _cb) in self._subs.items():
            client.subscribe(topic_filter, qos=qos)
        self._connected.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason_code: mqtt.ReasonCode,
        _properties: object,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected:
            with self.stats.lock:
                self.stats.disconnects += 1
            if self._started:
                log.warning("mqtt %s: disconnected (%s); reconnecting", self.client_id, reason_code)

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _mid: int,
        _reason_code: mqtt.ReasonCode,
        _properties: object,
    ) -> None:
        with self.stats.lock:
            self.stats.acknowledged += 1

    def _on_unmatched(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        log.debug("mqtt %s: message on %s matched no subscription", self.client_id, msg.topic)


def open_session(
    url: str,
    client_id: str,
    topic_filter: str,
    timeout_s: float = 10.0,
    *,
    username: str | None = None,
    password: str | None = None,
) -> None:
    """Create (or keep) the persistent session ``client_id`` subscribed to ``topic_filter``.

    From then on the broker queues QoS 1 messages on ``topic_filter`` for that client until
    it connects, so a consumer that starts after its producers loses nothing. Raises
    ``TimeoutError`` when the broker does not confirm the subscription in ``timeout_s``.
    """
    host, port, tls = parse_url(url)
    subscribed = threading.Event()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=False,
        protocol=mqtt.MQTTv311,
    )
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(host, port)
    client.loop_start()
    try:
        if not subscribed.wait(timeout_s):
            raise TimeoutError(f"{url}: no SUBACK for {topic_filter} within {timeout_s} s")
    finally:
        client.disconnect()
        client.loop_stop()
