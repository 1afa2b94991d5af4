"""Drops are never silent: a collector's retained presence carries its MQTT drops.

A collector publishes through a bounded queue (``[mqtt] queue_limit``); a broker away
longer than the queue allows makes the client drop the oldest queued messages (counted in
``MqttStats.dropped``, logged by the client: a WARNING at the first drop of an outage, a
summary at the next CONNACK). The collector's retained ``collector/1`` presence carries the
cumulative count as ``mqtt_dropped``; :class:`DropWatch` tells the collector when to
publish it again: the count moved and the client is connected (a presence queued during
the outage would only push out one more reading).
"""

from __future__ import annotations

from gridflex.mqtt import MqttStats

__all__ = ["STATUS_REFRESH_S", "DropWatch", "dropped_count"]

#: How often a collector checks whether its presence must carry a new drop count, s.
STATUS_REFRESH_S = 2.0


def dropped_count(publisher: object) -> int | None:
    """The messages ``publisher`` (an MQTT client) dropped since start; None if it cannot say."""
    stats = getattr(publisher, "stats", None)
    if not isinstance(stats, MqttStats):
        return None
    with stats.lock:
        return stats.dropped


class DropWatch:
    """Tells when a presence with a new ``mqtt_dropped`` is due."""

    def __init__(self, publisher: object) -> None:
        self._publisher = publisher
        self._reported = dropped_count(publisher) or 0

    def due(self) -> int | None:
        """The new count when it moved and the client is connected (then noted); else None."""
        count = dropped_count(self._publisher)
        if count is None or count == self._reported:
            return None
        if not getattr(self._publisher, "connected", True):
            return None
        self._reported = count
        return count
