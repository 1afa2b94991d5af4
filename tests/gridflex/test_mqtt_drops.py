"""``DropWatch``: when a collector's presence must carry a new ``mqtt_dropped``."""

from __future__ import annotations

from dataclasses import dataclass, field

from gridflex.mqtt import MqttStats
from gridflex.mqtt_drops import DropWatch, dropped_count


@dataclass
class _Publisher:
    stats: MqttStats = field(default_factory=MqttStats)
    connected: bool = True


def test_a_new_count_is_due_once_and_only_while_connected() -> None:
    publisher = _Publisher()
    watch = DropWatch(publisher)
    assert watch.due() is None  # nothing dropped yet
    publisher.connected = False
    publisher.stats.dropped = 7
    assert watch.due() is None  # a presence queued in the outage would push out a reading
    publisher.connected = True
    assert watch.due() == 7
    assert watch.due() is None  # reported once
    publisher.stats.dropped = 9
    assert watch.due() == 9


def test_a_publisher_without_client_stats_has_no_count() -> None:
    assert dropped_count(object()) is None
    assert DropWatch(object()).due() is None
