"""The subscriptions of ``gridflex.mqtt_asyncio``'s client, and the errors it reports.

Pure bookkeeping, no I/O: the filters and their callbacks (kept across reconnects), the
SUBSCRIBE packets awaiting their SUBACK (their packet identifiers stay reserved, MQTT
3.1.1 section 2.3.1), what the broker granted or refused on the current connection
(3.9.3), and which callbacks a topic reaches (matched once per topic, then cached).

``SubscriptionRefused`` and ``SessionLost`` are what the client hands to its caller (see
the ``gridflex.mqtt_asyncio`` docstring); a filter that breaks the rules of section 4.7
is refused by ``Subscriptions.add`` with a ``ValueError`` before anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable

from gridflex.mqtt import MessageCallback, plain_filter
from gridflex.mqtt_wire import SUBACK_FAILURE, MalformedPacket, filter_matches, validate_filter

__all__ = [
    "SUBSCRIBE_IDS",
    "ErrorCallback",
    "MqttClientError",
    "SessionLost",
    "SubscriptionRefused",
    "Subscriptions",
]

#: SUBSCRIBE packets awaiting their SUBACK at most; later subscriptions wait for a SUBACK.
SUBSCRIBE_IDS = 256
#: Topics whose callbacks are remembered (a site has a few per asset); beyond, start over.
_MAX_ROUTES = 65_536


class MqttClientError(Exception):
    """An error the broker reported that the caller must act on."""


class SubscriptionRefused(MqttClientError):
    """The broker refused a subscription (SUBACK return code 0x80)."""

    def __init__(self, client_id: str, topic_filter: str) -> None:
        super().__init__(
            f"mqtt {client_id}: the broker refused the subscription to {topic_filter!r} "
            "(SUBACK 0x80: not authorised, or a filter the broker does not accept)"
        )
        self.topic_filter = topic_filter


class SessionLost(MqttClientError):
    """The broker had no persistent session for the client (CONNACK session present 0)."""


#: Receives ``SubscriptionRefused`` and ``SessionLost`` on the client's loop.
ErrorCallback = Callable[[MqttClientError], None]


class Subscriptions:
    """Filters, their callbacks, the SUBSCRIBEs in flight and the broker's answers."""

    def __init__(self) -> None:
        self.filters: dict[str, tuple[int, MessageCallback]] = {}
        #: SUBSCRIBE packets awaiting their SUBACK: packet id -> filters.
        self.in_flight: dict[int, list[str]] = {}
        #: SUBACK return code per filter on the current connection.
        self.granted: dict[str, int] = {}
        self._deferred: list[tuple[str, int]] = []
        self._routes: dict[str, list[MessageCallback]] = {}

    def add(self, topic_filter: str, qos: int, callback: MessageCallback) -> bool:
        """Record a subscription; True when it can go out now, False when it must wait.

        Raises ``ValueError`` for a QoS other than 0/1 or an invalid filter (nothing kept).
        """
        if qos not in (0, 1):
            raise ValueError(f"QoS {qos}: this client subscribes at QoS 0 or 1")
        validate_filter(topic_filter)
        self.filters[topic_filter] = (qos, callback)
        self.granted.pop(topic_filter, None)
        self._routes.clear()
        return len(self.in_flight) < SUBSCRIBE_IDS

    def defer(self, topic_filter: str, qos: int) -> None:
        """Send ``topic_filter`` with the next SUBACK (``SUBSCRIBE_IDS`` in flight now)."""
        self._deferred.append((topic_filter, qos))

    def everything(self) -> list[tuple[str, int]]:
        """Every ``(filter, QoS)``, to subscribe again on a new connection."""
        return [(f, qos) for f, (qos, _cb) in self.filters.items()]

    def sent(self, mid: int, filters: list[tuple[str, int]]) -> None:
        """A SUBSCRIBE with packet id ``mid`` went out: the id stays reserved until its SUBACK."""
        self.in_flight[mid] = [topic_filter for topic_filter, _qos in filters]

    def acknowledged(self, mid: int, codes: bytes) -> tuple[list[str], list[tuple[str, int]]]:
        """A SUBACK: ``(refused filters, deferred subscriptions to send now)``.

        A SUBACK for an unknown id changes nothing; one whose codes do not match the
        SUBSCRIBE's filters raises ``MalformedPacket``.
        """
        filters = self.in_flight.pop(mid, None)
        if filters is None:
            return [], []
        if len(codes) != len(filters):
            raise MalformedPacket(f"SUBACK with {len(codes)} codes for {len(filters)} filters")
        refused = []
        for topic_filter, code in zip(filters, codes, strict=True):
            self.granted[topic_filter] = code
            if code == SUBACK_FAILURE:
                refused.append(topic_filter)
        deferred, self._deferred = self._deferred, []
        return refused, deferred

    def answered(self) -> bool:
        """Whether the broker answered every subscription on the current connection."""
        return all(f in self.granted for f in self.filters)

    def first_refused(self) -> str | None:
        """The first filter the broker refused on the current connection, if any."""
        for topic_filter in self.filters:
            if self.granted.get(topic_filter) == SUBACK_FAILURE:
                return topic_filter
        return None

    def connection_lost(self) -> None:
        """Forget what belonged to the connection; the filters are sent again on the next."""
        self.in_flight.clear()
        self.granted.clear()
        self._deferred.clear()

    def callbacks(self, topic: str) -> list[MessageCallback]:
        """The callbacks whose filter matches ``topic`` (matched once per topic)."""
        found = self._routes.get(topic)
        if found is None:
            found = [
                callback
                for topic_filter, (_qos, callback) in self.filters.items()
                if filter_matches(plain_filter(topic_filter), topic)
            ]
            if len(self._routes) >= _MAX_ROUTES:
                self._routes.clear()
            self._routes[topic] = found
        return found
