"""MQTT client over paho-mqtt 2.x driven by the asyncio event loop (no network thread).

Same delivery rules as ``gridflex.mqtt.MqttClient`` (QoS 1 and a persistent session by
default, a retained last will, a bounded outgoing queue that drops and counts past
``queue_limit``, reconnect with exponential backoff, clean stop after a bounded flush),
for code that already runs an asyncio loop and publishes a lot from it (the Modbus
collector: 5,000 telemetry messages a second at 1,000 inverters).

Why: with paho's own thread (``loop_start``) every ``publish()`` from the asyncio thread
writes a wake-up byte to paho's socketpair, and the two threads hand the GIL back and forth
on every socket call. Profiled in the Modbus collector at 1,000 inverters (py-spy), MQTT was
~40 % of the process' samples (~18 % ``publish()`` on the asyncio thread, 10 % of it the
wake-up ``send``; 25 % on paho's thread), and GIL hand-offs showed up as time inside the
Modbus socket writes. Here paho runs on the loop through its external-loop hooks
(``on_socket_open``/``on_socket_close``/``on_socket_register_write``/
``on_socket_unregister_write`` with ``loop_read``/``loop_write``/``loop_misc``): a
``publish()`` queues the packet, and once per loop pass every queued packet is written with
the socket corked (``TCP_CORK``), so a burst reaches the broker in few TCP segments. The
socket waits in the selector for room only when its buffer is full.

What paho itself costs stays: measured over a socketpair (no broker, pure CPU on the 2-core
VM), ``publish()`` ~23 us, writing ~6 us and handling the PUBACK ~60 us per QoS 1 message,
a third of which is paho building an (empty) MQTT 5 ``Properties`` object per PUBACK even
on MQTT 3.1.1. At 10,000 messages a second in bursts both clients spent ~88 us of CPU per
message; at the collector's rate with small bursts, ~150 us here against ~185 us threaded,
and no GIL contention with the rest of the process.

paho's reconnect-with-backoff lives in ``loop_forever``, which an external loop does not
run, so the backoff (``reconnect_min_s`` doubling to ``reconnect_max_s``, reset once
connected) is scheduled here on the loop. ``reconnect()`` opens the TCP connection with a
blocking ``connect`` (up to paho's ``connect_timeout``), so it runs in the loop's default
executor, and the socket callbacks it fires from that thread are handed to the loop.

All methods except ``stats`` must be called from the loop's thread; message callbacks run
on the loop (keep them short).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from gridflex.mqtt import MessageCallback, MqttStats, parse_url

__all__ = ["AsyncMqttClient"]

log = logging.getLogger(__name__)

_MISC_INTERVAL_S = 1.0  # paho's loop_misc: keepalive pings and ping timeouts
_STOP_CLOSE_TIMEOUT_S = 2.0
_CORK: int | None = getattr(socket, "TCP_CORK", None)  # Linux


class AsyncMqttClient:
    """A paho client on the running asyncio loop, configured for gridflex.

    Parameters are those of ``gridflex.mqtt.MqttClient``. ``await start()`` (returns at
    once; connects in the background and keeps reconnecting until ``stop()``),
    ``await wait_connected(timeout_s)``, ``publish(...) -> bool`` (False: dropped, queue
    full), ``subscribe(topic_filter, callback)``, ``await flush(timeout_s)``,
    ``await stop(flush_timeout_s)``, ``stats``.
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
        self.host, self.port, tls = parse_url(url)
        self.url = url
        self.client_id = client_id
        self.stats = MqttStats()
        self._keepalive_s = keepalive_s
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._next_delay_s = reconnect_min_s
        self._subs: dict[str, tuple[int, MessageCallback]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._started = False
        self._stopping = False
        self._connected = False
        self._connected_event: asyncio.Event | None = None
        self._connecting: asyncio.Future[mqtt.MQTTErrorCode] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._misc: asyncio.TimerHandle | None = None
        self._reader_fd: int | None = None
        self._writer_fd: int | None = None
        self._write_scheduled = False
        self._closed: asyncio.Event | None = None
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
        c = self._client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_unmatched
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_socket_register_write
        c.on_socket_unregister_write = self._on_socket_unregister_write

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start connecting in the background on the running loop; returns at once."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._connected_event = asyncio.Event()
        self._closed = asyncio.Event()
        self._closed.set()
        self._started = True
        self._stopping = False
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive_s)
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
        """Whether the client is connected right now."""
        return self._connected

    def pending(self) -> int:
        """Messages published but not yet acknowledged by the broker."""
        with self.stats.lock:
            return self.stats.published - self.stats.acknowledged

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
        if self._connected and not await self.flush(flush_timeout_s):
            log.warning(
                "mqtt %s: %d messages not acknowledged at stop", self.client_id, self.pending()
            )
        self._stopping = True
        for handle in (self._retry, self._misc):
            if handle is not None:
                handle.cancel()
        self._retry = self._misc = None
        if self._connecting is not None:
            with contextlib.suppress(Exception):
                await self._connecting
        if self._client.socket() is not None:
            self._client.disconnect()  # DISCONNECT goes out on the next write, then closes
            assert self._closed is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), _STOP_CLOSE_TIMEOUT_S)
        self._remove_fds()
        self._connected = False
        self._started = False

    # ------------------------------------------------------------------ messages

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue one message; False when the bounded queue is full and it was dropped."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        rc = info.rc
        if rc == mqtt.MQTT_ERR_QUEUE_SIZE or (rc == mqtt.MQTT_ERR_NO_CONN and qos == 0):
            with self.stats.lock:
                self.stats.dropped += 1
                dropped = self.stats.dropped
            if rc == mqtt.MQTT_ERR_QUEUE_SIZE and (dropped == 1 or dropped % 1000 == 0):
                log.warning(
                    "mqtt %s: outgoing queue full, %d messages dropped", self.client_id, dropped
                )
            return False
        # MQTT_ERR_NO_CONN with QoS > 0: paho keeps the message and sends it on reconnect.
        with self.stats.lock:
            self.stats.published += 1
        return True

    def subscribe(self, topic_filter: str, callback: MessageCallback, qos: int = 1) -> None:
        """Call ``callback(topic, payload)`` on the loop for each message on ``topic_filter``.

        The subscription is renewed on every reconnect.
        """

        def _deliver(_client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
            with self.stats.lock:
                self.stats.received += 1
            callback(msg.topic, bytes(msg.payload))

        self._subs[topic_filter] = (qos, callback)
        self._client.message_callback_add(topic_filter, _deliver)
        if self._connected:
            self._client.subscribe(topic_filter, qos=qos)

    # ------------------------------------------------------------------ connecting

    def _connect(self) -> None:
        """Open the connection in the executor (paho's connect blocks); retry on failure."""
        self._retry = None
        if self._stopping or self._connecting is not None:
            return
        assert self._loop is not None
        self._connecting = self._loop.run_in_executor(None, self._client.reconnect)
        self._connecting.add_done_callback(self._connect_done)

    def _connect_done(self, future: asyncio.Future[mqtt.MQTTErrorCode]) -> None:
        self._connecting = None
        exc = future.exception()
        if not self._started or self._stopping:
            return
        if exc is not None:
            self._schedule_reconnect(f"{type(exc).__name__}: {exc}")
        elif self._client.socket() is None:  # opened, then lost before this callback ran
            self._schedule_reconnect("connection lost while connecting")
        # else: CONNACK arrives through loop_read -> _on_connect

    def _schedule_reconnect(self, reason: str) -> None:
        if self._retry is not None or self._connecting is not None:
            return
        assert self._loop is not None
        delay_s = self._next_delay_s
        self._next_delay_s = min(delay_s * 2, self._reconnect_max_s)
        log.info("mqtt %s: %s; reconnecting in %.1f s", self.client_id, reason, delay_s)
        self._retry = self._loop.call_later(delay_s, self._connect)

    def _run_misc(self) -> None:
        """Run paho's periodic work: keepalive ping, ping timeout."""
        self._misc = None
        if self._client.socket() is None or self._stopping:
            return
        self._client.loop_misc()
        assert self._loop is not None
        if self._client.socket() is not None:
            self._misc = self._loop.call_later(_MISC_INTERVAL_S, self._run_misc)

    # ------------------------------------------------------------------ socket hooks

    def _in_loop(self, callback: Callable[..., object], *args: object) -> None:
        """Run ``callback(*args)`` on the loop: now when on its thread, else queued."""
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            callback(*args)
        else:
            self._loop.call_soon_threadsafe(callback, *args)

    def _on_socket_open(self, _client: mqtt.Client, _userdata: object, sock: object) -> None:
        self._in_loop(self._add_reader, sock)

    def _add_reader(self, sock: socket.socket) -> None:
        if self._client.socket() is not sock or sock.fileno() < 0:
            return  # closed again before the loop got to it
        assert self._loop is not None and self._closed is not None
        self._closed.clear()
        self._reader_fd = sock.fileno()
        self._loop.add_reader(self._reader_fd, self._client.loop_read)
        if self._misc is None:
            self._misc = self._loop.call_later(_MISC_INTERVAL_S, self._run_misc)

    def _on_socket_close(self, _client: mqtt.Client, _userdata: object, _sock: object) -> None:
        self._in_loop(self._socket_closed)

    def _socket_closed(self) -> None:
        self._remove_fds()
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        if self._closed is not None:
            self._closed.set()

    def _remove_fds(self) -> None:
        assert self._loop is not None
        if self._reader_fd is not None:
            self._loop.remove_reader(self._reader_fd)
            self._reader_fd = None
        if self._writer_fd is not None:
            self._loop.remove_writer(self._writer_fd)
            self._writer_fd = None

    def _on_socket_register_write(
        self, _client: mqtt.Client, _userdata: object, sock: object
    ) -> None:
        self._in_loop(self._schedule_write, sock)

    def _schedule_write(self, sock: socket.socket) -> None:
        """Write the queued packets on the next loop pass (all publishes of this pass)."""
        if self._write_scheduled or self._writer_fd is not None:
            return
        assert self._loop is not None
        self._write_scheduled = True
        self._loop.call_soon(self._write, sock)

    def _write(self, sock: socket.socket) -> None:
        """Send every queued packet, corked so a burst leaves in as few TCP segments.

        Only when the socket's buffer is full does the socket wait in the selector for
        room (``add_writer``); otherwise no selector registration per burst.
        """
        self._write_scheduled = False
        if self._client.socket() is not sock or sock.fileno() < 0:
            return
        if _CORK is not None:
            sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1)
        try:
            self._client.loop_write()
        finally:
            if _CORK is not None and sock.fileno() >= 0:
                sock.setsockopt(socket.IPPROTO_TCP, _CORK, 0)
        if self._client.want_write() and self._writer_fd is None and sock.fileno() >= 0:
            assert self._loop is not None
            self._writer_fd = sock.fileno()
            self._loop.add_writer(self._writer_fd, self._write_ready, sock)

    def _write_ready(self, sock: socket.socket) -> None:
        """The socket has room again: write, and stop waiting once nothing is left."""
        self._client.loop_write()
        if not self._client.want_write():
            self._remove_writer()

    def _on_socket_unregister_write(
        self, _client: mqtt.Client, _userdata: object, _sock: object
    ) -> None:
        self._in_loop(self._remove_writer)

    def _remove_writer(self) -> None:
        if self._writer_fd is not None:
            assert self._loop is not None
            self._loop.remove_writer(self._writer_fd)
            self._writer_fd = None

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
        self._next_delay_s = self._reconnect_min_s
        for topic_filter, (qos, _cb) in self._subs.items():
            client.subscribe(topic_filter, qos=qos)
        self._connected = True
        if self._connected_event is not None:
            self._connected_event.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason_code: mqtt.ReasonCode,
        _properties: object,
    ) -> None:
        was_connected = self._connected
        self._connected = False
        if self._connected_event is not None:
            self._connected_event.clear()
        if was_connected:
            with self.stats.lock:
                self.stats.disconnects += 1
        if self._started and not self._stopping:
            if was_connected:
                log.warning("mqtt %s: disconnected (%s)", self.client_id, reason_code)
            self._in_loop(self._schedule_reconnect, f"disconnected ({reason_code})")

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
