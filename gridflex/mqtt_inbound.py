"""The receiving half of ``gridflex.mqtt_asyncio``'s client: packets in, flow control.

:class:`_Connection` is the ``asyncio.Protocol`` of one connection; :class:`Inbound` is
the part of ``AsyncMqttClient`` that handles what the broker sends (PUBACK, PUBLISH,
CONNACK, SUBACK, PINGRESP), the withheld PUBACKs of ``manual_ack`` and the receive flow
control.

Flow control (TCP back-pressure). A consumer that cannot keep up calls
:meth:`Inbound.pause_reading`: from then on no PUBLISH is handed to a callback. The
packets of the current read that follow (at most one socket read, 256 KiB, plus one
incomplete packet of at most ``max_packet_size``) wait in the connection's backlog, and the
transport stops reading its socket: the kernel's receive buffer fills, TCP's window closes
and the broker keeps the rest in the session's queue (Mosquitto ``max_queued_messages`` /
``max_queued_bytes``). :meth:`Inbound.resume_reading` hands the backlog over (the consumer
may pause again in the middle of it) and reads on. Nothing is dropped: a message is
acknowledged only after its callback ran. While reading is paused a PINGRESP may wait
behind the backlog, so a missing PINGRESP does not close the connection then (the client
still sends its PINGREQs, so the broker's keepalive holds). The pause outlives a
reconnect: on a new connection CONNACK and SUBACK are handled, the first PUBLISH waits.

Hostile or broken input from the broker closes the connection (4.8) and the client
reconnects; a run of such errors keeps the backoff growing (docs/operations.md, "MQTT
client limits"):

- A packet beyond ``max_packet_size`` (default 1 MiB, fixed header included) is refused
  from its length alone, never buffered; counted in ``stats.oversized``, the first logged
  as a warning. Cap messages at the broker too (Mosquitto ``max_packet_size``), or a
  persistent session re-delivers the same one on every reconnect.
- A malformed or truncated packet (see ``gridflex.mqtt_wire``; a topic that is not UTF-8,
  1.5.3) is counted in ``stats.malformed``. The packets before it in the same read are
  handled, so PUBACKs are counted and ``pending()`` stays exact; what is still in flight
  is re-sent on the next connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple, cast

from gridflex.mqtt import MqttStats
from gridflex.mqtt_subscriptions import MqttClientError, SubscriptionRefused, Subscriptions
from gridflex.mqtt_wire import (
    CONNACK,
    PINGRESP,
    PUBACK,
    PUBLISH,
    SUBACK,
    UNSUBACK,
    MalformedPacket,
    PacketReader,
    PacketTooLarge,
    decode_puback,
    decode_publish,
    decode_suback,
    encode_puback,
)

__all__ = ["HeldAcks", "Inbound"]

log = logging.getLogger("gridflex.mqtt_asyncio")

#: Malformed packets logged at WARNING: the first, then one in this many (the rest at DEBUG).
_LOG_EVERY = 100

Packet = tuple[int, bytes]


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to the broker; hands packets to its client."""

    def __init__(self, client: Inbound, max_packet_size: int) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.reader = PacketReader(max_packet_size)
        self.paused = False  # writing: the transport's buffer is full
        self.reading_paused = False
        #: Packets read but not handled while the client's reading is paused.
        self.backlog: list[Packet] = []
        self.protocol_error = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.client._connection_made(self)

    def data_received(self, data: bytes) -> None:
        if self.protocol_error:
            return  # closed after a protocol error: the rest of the stream is void
        try:
            packets = self.reader.feed(data)
            if self.backlog:  # a read that raced the pause: after what already waits
                self.backlog.extend(packets)
                return
            self.client._packets(self, packets)
        except MalformedPacket as exc:
            self.protocol_error = True
            self.client._protocol_error(self, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._connection_lost(self, exc)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.client._pump()

    def stop_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def start_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()


class HeldAcks(NamedTuple):
    """PUBACKs withheld by a ``manual_ack`` client: their connection and identifiers."""

    connection: object | None
    mids: list[int]


class Inbound:
    """Receiving, for ``AsyncMqttClient`` (which sets these attributes and methods)."""

    client_id: str
    host: str
    port: int
    stats: MqttStats
    _subs: Subscriptions
    _conn: _Connection | None
    _connected: bool
    _inflight: dict[int, bytes]
    _queue: object
    _manual_ack: bool
    _held_acks: list[int]
    _read_paused: bool
    _penalty_s: float
    _reconnect_min_s: float
    _reconnect_max_s: float
    _ping_outstanding: bool

    # Provided by AsyncMqttClient.
    def _connection_made(self, conn: _Connection) -> None:
        raise NotImplementedError

    def _connection_lost(self, conn: _Connection, exc: Exception | None) -> None:
        raise NotImplementedError

    def _on_connack(self, conn: _Connection, first: int, body: bytes) -> None:
        raise NotImplementedError

    def _queue_packet(self, packet: bytes) -> None:
        raise NotImplementedError

    def _pump(self) -> None:
        raise NotImplementedError

    def _report(self, error: MqttClientError) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ flow control

    @property
    def reading_paused(self) -> bool:
        """Whether :meth:`pause_reading` holds the messages back right now."""
        return self._read_paused

    def pause_reading(self) -> None:
        """Hand no more messages to the callbacks and stop reading the socket.

        Safe inside a message callback: the rest of the current read waits. Counted in
        ``stats.read_pauses`` (once per pause).
        """
        if self._read_paused:
            return
        self._read_paused = True
        with self.stats.lock:
            self.stats.read_pauses += 1
        log.debug("mqtt %s: reading paused", self.client_id)
        if self._conn is not None:
            self._conn.stop_reading()

    def resume_reading(self) -> None:
        """Hand over what waits (it may pause again), then read the socket again."""
        if not self._read_paused:
            return
        self._read_paused = False
        log.debug("mqtt %s: reading resumed", self.client_id)
        conn = self._conn
        if conn is None:
            return
        if conn.backlog:
            backlog, conn.backlog = conn.backlog, []
            try:
                self._packets(conn, backlog)
            except MalformedPacket as exc:
                conn.protocol_error = True
                self._protocol_error(conn, exc)
                return
        if not self._read_paused:
            conn.start_reading()

    # ------------------------------------------------------------------ acknowledgements

    def take_held_acks(self) -> HeldAcks:
        """The PUBACKs withheld (``manual_ack``) for the messages delivered so far.

        Take them at the moment the messages delivered until then are handed on to be made
        durable; pass them to :meth:`send_acks` once they are.
        """
        held = HeldAcks(self._conn, self._held_acks)
        self._held_acks = []
        return held

    def send_acks(self, held: HeldAcks) -> int:
        """Send the PUBACKs of ``held``; return how many (0 if its connection is gone).

        On another connection the broker has redelivered (or will) those messages with
        their new identifiers, so old identifiers are not sent.
        """
        if not held.mids or held.connection is None or held.connection is not self._conn:
            return 0
        for mid in held.mids:
            self._queue_packet(encode_puback(mid))
        return len(held.mids)

    # ------------------------------------------------------------------ packets

    def _packets(self, conn: _Connection, packets: list[Packet]) -> None:
        """Handle the packets of one read; a malformed one raises ``MalformedPacket``.

        The PUBACKs before a malformed packet are counted (``finally``), so ``pending()``
        matches the in-flight table whatever comes after them. While reading is paused,
        a PUBLISH and what follows it go to the connection's backlog.
        """
        acked = 0
        inflight = self._inflight
        try:
            for index, (first, body) in enumerate(packets):
                kind = first >> 4
                if kind == PUBACK:  # the hot path: ``decode_puback`` inlined
                    if first != 0x40 or len(body) != 2:
                        decode_puback(first, body)  # raises MalformedPacket
                    if inflight.pop((body[0] << 8) | body[1], None) is not None:
                        acked += 1
                elif kind == PUBLISH:
                    if self._read_paused:
                        conn.backlog.extend(packets[index:])
                        conn.stop_reading()
                        return
                    self._on_publish(first, body)
                elif kind == CONNACK:
                    self._on_connack(conn, first, body)
                elif kind == PINGRESP:
                    if first & 0x0F or body:
                        raise MalformedPacket(f"PINGRESP of {len(body)} bytes")
                    self._ping_outstanding = False
                elif kind == SUBACK:
                    self._on_suback(first, body)
                elif kind == UNSUBACK:  # never sent by this client: ignored
                    log.debug("mqtt %s: UNSUBACK ignored", self.client_id)
                else:
                    raise MalformedPacket(f"packet type {kind} is not sent to a client")
        finally:
            if acked:
                with self.stats.lock:
                    self.stats.acknowledged += acked
                if self._queue and self._connected:
                    self._pump()

    def _on_suback(self, first: int, body: bytes) -> None:
        refused, deferred = self._subs.acknowledged(*decode_suback(first, body))
        if deferred:
            self._send_subscribe(deferred)
        if refused:
            with self.stats.lock:
                self.stats.refused_subscriptions += len(refused)
            for topic_filter in refused:
                self._report(SubscriptionRefused(self.client_id, topic_filter))

    def _send_subscribe(self, filters: list[tuple[str, int]]) -> None:
        raise NotImplementedError

    def _on_publish(self, first: int, body: bytes) -> None:
        topic, qos, mid, payload = decode_publish(first, body)
        callbacks = self._subs.callbacks(topic)
        if callbacks:
            with self.stats.lock:
                self.stats.received += len(callbacks)
        for callback in callbacks:
            try:
                callback(topic, payload)
            except Exception:  # a subscriber's bug must not break the connection
                log.exception("mqtt %s: message callback failed on %s", self.client_id, topic)
        if not callbacks:
            log.debug("mqtt %s: message on %s matched no subscription", self.client_id, topic)
        if qos == 1:
            if self._manual_ack:
                self._held_acks.append(mid)
            else:
                self._queue_packet(encode_puback(mid))

    def _protocol_error(self, conn: _Connection, exc: MalformedPacket) -> None:
        """Close ``conn`` after the broker broke the protocol; count and log it (4.8)."""
        oversized = isinstance(exc, PacketTooLarge)
        with self.stats.lock:
            if oversized:
                self.stats.oversized += 1
                count = self.stats.oversized
            else:
                self.stats.malformed += 1
                count = self.stats.malformed
        # An oversized packet is logged once; malformed ones now and then (both counted).
        loud = count == 1 or (not oversized and count % _LOG_EVERY == 0)
        level = logging.WARNING if loud else logging.DEBUG
        log.log(
            level,
            "mqtt %s: %s from %s:%d (%d so far); closing the connection",
            self.client_id,
            exc,
            self.host,
            self.port,
            count,
        )
        self._penalty_s = min(
            max(self._penalty_s * 2, self._reconnect_min_s), self._reconnect_max_s
        )
        if conn.transport is not None:
            conn.transport.abort()
