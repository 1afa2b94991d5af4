"""The MQTT subscriber behind the dataflow's source, in a thread or in its own process.

:class:`MqttReceiver` is a paho client on a persistent session (MQTT 3.1.1
``clean_session=False``, stable client id, QoS 1 subscription renewed on every connect)
that collects messages as ``(topic, payload, received_ms)`` tuples; :meth:`~MqttReceiver.take`
hands over what arrived since the last call, with the time it vouches for: every message
received before it has been handed over (the source turns that into heartbeats).

paho's Python packet handling costs about 100 µs per QoS 1 message here, as much as the
whole dataflow; in the dataflow's process the two share one GIL. :func:`receiver_main`
therefore runs a receiver in a child process (started with ``spawn``; this module imports
nothing heavy) and ships batches over a pipe; the parent only unpickles them.

Shutdown: the parent writes to a control pipe; the child disconnects first (nothing more
is acknowledged), sends what it still holds, then ``None`` as end marker, and exits. The
child ignores SIGINT/SIGTERM (a Ctrl-C reaches the whole process group: the parent
decides) and exits by itself when the parent is gone (end of file on the control pipe).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as mqtt

from gridflex.log import setup_logging

__all__ = ["Message", "MqttReceiver", "ReceiverSettings", "receiver_main"]

log = logging.getLogger(__name__)

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
        topic_filter: Subscription.
        qos: Subscription QoS.
        username: Broker user name.
        password: Broker password.
        flush_ms: How often the child process ships a batch to the parent, ms.
        heartbeat_ms: How often the child ships an empty batch while nothing arrives, ms.
        keepalive_s: MQTT keepalive, s.
        log_level: Logging level of the child process (the parent's, by default).

    """

    host: str
    port: int
    tls: bool
    client_id: str
    topic_filter: str
    qos: int = 1
    username: str | None = None
    password: str | None = None
    flush_ms: int = 5
    heartbeat_ms: int = 100
    keepalive_s: int = 30
    log_level: int = field(default_factory=lambda: logging.getLogger().getEffectiveLevel())


class MqttReceiver:
    """A paho subscriber that collects messages until :meth:`take` (see the module docstring)."""

    def __init__(self, settings: ReceiverSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pending: list[Message] = []
        self._stopping = False
        self.received = 0
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        if settings.username is not None:
            self._client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            self._client.tls_set()
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background (paho's network thread; paho reconnects)."""
        self._client.connect_async(
            self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s
        )
        self._client.loop_start()
        log.info(
            "MQTT source %s subscribing to %s at %s:%d",
            self.settings.client_id,
            self.settings.topic_filter,
            self.settings.host,
            self.settings.port,
        )

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT source %s: connection refused: %s", self.settings.client_id, reason)
            return
        log.info(
            "MQTT source %s connected (session present: %s)",
            self.settings.client_id,
            flags.session_present,
        )
        client.subscribe(self.settings.topic_filter, qos=self.settings.qos)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if not self._stopping:
            log.warning(
                "MQTT source %s disconnected (%s); paho reconnects", self.settings.client_id, reason
            )

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic, payload = msg.topic, bytes(msg.payload)
        with self._lock:  # receive time and take time come from under one lock
            self._pending.append((topic, payload, _now_ms()))
            self.received += 1

    def take(self) -> tuple[list[Message], int]:
        """Return the messages that arrived since the last call, and ``through_ms``.

        Every message received before ``through_ms`` (UTC epoch ms) is in this batch or
        an earlier one: the basis of the source's heartbeats.
        """
        with self._lock:
            taken, self._pending = self._pending, []
            through_ms = _now_ms()
        return taken, through_ms

    def stop(self) -> None:
        """Disconnect; what was acknowledged before is still returned by :meth:`take`."""
        if self._stopping:
            return
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()


def receiver_main(settings: ReceiverSettings, conn: Connection, control: Connection) -> None:
    """Child process: ship ``(through_ms, messages)`` to ``conn`` until ``control`` says stop.

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
            batch, through_ms = receiver.take()
            if batch or through_ms - last_sent_ms >= settings.heartbeat_ms:
                conn.send((through_ms, batch))
                last_sent_ms = through_ms
        receiver.stop()
        rest, through_ms = receiver.take()
        conn.send((through_ms, rest))
        conn.send(None)
    except (BrokenPipeError, EOFError, ConnectionResetError):
        log.warning("MQTT receiver: the pipeline process is gone; exiting")
    finally:
        receiver.stop()
        conn.close()
        control.close()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
