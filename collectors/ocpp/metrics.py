"""The CSMS's Prometheus metrics, read from ``Csms.stats`` and its sessions at scrape time.

See :mod:`gridflex.metrics` and the Metrics section of ``docs/operations.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from collectors.ocpp.csms import Csms
from gridflex.metrics import counter, gauge, mqtt_families
from gridflex.mqtt import MqttStats

__all__ = ["families"]

_COUNT = re.compile(r"count\((\d+)")


def _frames_received(csms: Csms) -> int:
    """OCPP frames routed so far: the next number of the CSMS's shared frame counter, - 1.

    ``itertools.count`` tells its next value only in its repr; reading it consumes none.
    """
    match = _COUNT.match(repr(csms.frames))
    return int(match.group(1)) - 1 if match else 0


def families(csms: Csms) -> Iterator[Metric]:
    """Every metric of ``gridflex collect ocpp``."""
    stats = csms.stats
    yield gauge(
        "gridflex_ocpp_stations_connected",
        "Charging stations connected over OCPP right now",
        csms.connected_count,
    )
    evses = csms.evse_states
    yield gauge("gridflex_ocpp_evses", "EVSE assets of the site file", len(evses))
    yield gauge(
        "gridflex_ocpp_evses_online",
        "EVSE assets whose station is connected",
        sum(1 for evse in evses if evse.station.connected),
    )
    yield counter("gridflex_ocpp_connections", "Station connections accepted", stats.connections)
    yield counter(
        "gridflex_ocpp_disconnections", "Station connections closed", stats.disconnections
    )
    yield counter(
        "gridflex_ocpp_refused_connections",
        "Connections refused (unknown station, bad credentials, address not allowed)",
        stats.refused_connections,
    )
    yield counter(
        "gridflex_ocpp_messages_received",
        "OCPP-J frames received from stations",
        _frames_received(csms),
    )
    yield counter(
        "gridflex_ocpp_callerrors_sent",
        "CALLERROR frames sent to stations (malformed frame, unknown action, schema "
        "violation, handler failure)",
        stats.call_errors,
    )
    dead = CounterMetricFamily(
        "gridflex_dead_letters",
        "Messages refused to the dead-letter topic, by component and reason kind",
        labels=["component", "reason"],
    )
    dead.add_metric(["ocpp", "refused_input"], stats.bad_frames)
    yield dead
    yield counter(
        "gridflex_ocpp_readings_published",
        "Telemetry readings published from meter values",
        stats.telemetry_published,
    )
    yield counter(
        "gridflex_ocpp_readings_refused",
        "Meter values refused (out of range, unknown EVSE)",
        stats.readings_refused,
    )
    yield counter(
        "gridflex_ocpp_charging_profiles_sent",
        "SetChargingProfile requests sent to stations",
        stats.profiles_sent,
    )
    mqtt_stats = getattr(csms.publisher, "stats", None)
    if isinstance(mqtt_stats, MqttStats):
        yield from mqtt_families([("csms", mqtt_stats, csms.publisher)])
