"""``gridflex pipeline``'s Prometheus metrics, read at scrape time.

The MQTT source's partitions (messages in, and their receivers' counters: in the child
process these arrive with each batch, at most ``heartbeat_ms`` old), the MQTT sink's
clients (messages out, pending, dropped) and the dead letters by reason kind. See
:mod:`gridflex.metrics` and the Metrics section of ``docs/operations.md``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gridflex.metrics import mqtt_families
from pipelines.mqtt_io import MqttSink, MqttSource
from pipelines.validate import REASON_KINDS

__all__ = ["families"]


def families(
    source: MqttSource, sink: MqttSink | None, dead_letters: Counter[str]
) -> Iterator[Metric]:
    """Every metric of ``gridflex pipeline`` (``sink`` None: another sink, not counted)."""
    parts = list(source.parts)
    received = CounterMetricFamily(
        "gridflex_pipeline_messages_received",
        "Messages the dataflow took from its MQTT source (telemetry and acks)",
        labels=["partition"],
    )
    queued = GaugeMetricFamily(
        "gridflex_pipeline_receive_queue_messages",
        "Messages waiting in the MQTT receiver for the dataflow (at its last hand-over)",
        labels=["partition"],
    )
    max_queued = GaugeMetricFamily(
        "gridflex_pipeline_receive_queue_max_messages",
        "Most messages the receiver's queue ever held (bounded by [pipeline] receive_queue)",
        labels=["partition"],
    )
    pauses = CounterMetricFamily(
        "gridflex_pipeline_read_pauses",
        "Times the receiver stopped reading its socket because its queue was full",
        labels=["partition"],
    )
    for index, part in enumerate(parts):
        label = [str(index)]
        received.add_metric(label, part.received)
        counters = part.counters
        if counters is not None:
            queued.add_metric(label, counters.queued)
            max_queued.add_metric(label, counters.max_queued)
            pauses.add_metric(label, counters.read_pauses)
    yield from (received, queued, max_queued, pauses)
    dead = CounterMetricFamily(
        "gridflex_dead_letters",
        "Messages refused to the dead-letter topic, by component and reason kind",
        labels=["component", "reason"],
    )
    counts = dict(dead_letters)  # one C-level copy: workers may add a kind meanwhile
    for kind in sorted(set(REASON_KINDS) | set(counts)):
        dead.add_metric(["pipeline", kind], counts.get(kind, 0))
    yield dead
    if sink is not None:
        clients = list(sink.clients)
        yield from mqtt_families(
            (f"out-w{index}", client.stats, client) for index, client in enumerate(clients)
        )
