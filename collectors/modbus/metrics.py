"""The Modbus collector's Prometheus metrics, read from its ``CollectorStats`` at scrape time.

See :mod:`gridflex.metrics` and the Metrics section of ``docs/operations.md``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from collectors.modbus.poller import CollectorStats, FailureKind
from collectors.modbus.schedule import LatenessStats
from gridflex.metrics import counter, gauge, mqtt_families
from gridflex.mqtt import MqttStats

__all__ = ["FAILURE_KINDS", "LATENESS_BUCKETS_S", "families", "lateness_family"]

#: The ``kind`` label of ``gridflex_modbus_device_failures`` (``classify_failure``).
FAILURE_KINDS: tuple[FailureKind, ...] = ("silent", "garbage", "internal")

#: Upper bounds of ``gridflex_modbus_poll_lateness_seconds``, s.
LATENESS_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def lateness_family(
    lateness: LatenessStats, counts: list[int] | None = None
) -> HistogramMetricFamily:
    """The collector's 0.1 ms lateness buckets summed into the exported bounds.

    A poll counts under a bound when its 0.1 ms bucket lies wholly below it (the bounds
    are whole multiples of the bucket); lateness of 1 s and more is only in ``+Inf``.
    ``counts``: a copy of ``lateness.counts`` already taken (default: taken here).
    """
    counts = list(lateness.counts) if counts is None else counts
    family = HistogramMetricFamily(
        "gridflex_modbus_poll_lateness_seconds",
        "How long after its due time each poll started",
    )
    buckets: list[tuple[str, float]] = []
    for bound in LATENESS_BUCKETS_S:
        edge = min(round(bound * 1000 / lateness.bucket_ms), lateness.buckets)
        buckets.append((repr(bound), sum(counts[:edge])))
    buckets.append(("+Inf", sum(counts)))
    family.add_metric([], buckets, lateness.total_ms / 1000.0)
    return family


def families(stats: CollectorStats, mqtt: object) -> Iterator[Metric]:
    """Every metric of ``gridflex collect modbus``."""
    lateness = stats.lateness
    counts = list(lateness.counts)  # one copy: polls and the histogram agree
    yield counter("gridflex_modbus_polls", "Polls started", sum(counts))
    yield counter(
        "gridflex_modbus_missed_polls",
        "Poll slots skipped because the previous poll of the device was still running",
        stats.missed,
    )
    yield counter(
        "gridflex_modbus_readings_published", "Telemetry readings published", stats.published
    )
    yield counter(
        "gridflex_modbus_poll_failures",
        "Polls that failed (timeout, connection lost, Modbus exception)",
        stats.failures,
    )
    kinds = CounterMetricFamily(
        "gridflex_modbus_device_failures",
        "Device failures by kind: silent (offline), garbage (error: answered, not usably), "
        "internal (error: a bug)",
        labels=["kind"],
    )
    by_kind = dict(stats.failure_kinds)  # one C-level copy
    for kind in FAILURE_KINDS:
        kinds.add_metric([kind], by_kind.get(kind, 0))
    yield kinds
    yield counter(
        "gridflex_modbus_invalid_readings",
        "Readings not published because they failed the telemetry schema",
        stats.invalid,
    )
    yield lateness_family(lateness, counts)
    yield gauge("gridflex_modbus_devices", "Inverters this collector polls", stats.devices)
    yield gauge(
        "gridflex_modbus_devices_online",
        "Inverters whose last published status is online",
        stats.online,
    )
    mqtt_stats = getattr(mqtt, "stats", None)
    if isinstance(mqtt_stats, MqttStats):
        yield from mqtt_families([("telemetry", mqtt_stats, mqtt)])
