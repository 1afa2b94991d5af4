"""``gridflex control``'s Prometheus metrics, read from its ``ControlService`` at scrape time.

See :mod:`gridflex.metrics` and the Metrics section of ``docs/operations.md``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from control.service import ControlService
from gridflex.contract import ACK_RESULTS
from gridflex.metrics import counter, gauge, mqtt_families

__all__ = ["DEAD_LETTER_KINDS", "families"]

#: The ``reason`` label of control's dead letters (``ControlService._dead_letter``): the
#: commands' and those of ``control.inbound`` (statuses, CSMS results and presences, readings).
DEAD_LETTER_KINDS = (
    "malformed",
    "not_a_command",
    "out_of_range",
    "wrong_site",
    "topic_mismatch",
    "unknown_asset",
    "bad_topic",
    "wrong_schema",
)


def families(service: ControlService) -> Iterator[Metric]:
    """Every metric of ``gridflex control``."""
    # Before the acks: an ack is counted before its latency, so a scrape never shows
    # more latencies than acks.
    latency = service.ack_latency.family(
        "gridflex_control_ack_latency_seconds",
        "From the command's issued time to the device's confirmation (acks that carry it)",
    )
    yield counter(
        "gridflex_control_commands_received",
        "Dispatch commands received over MQTT (valid or not)",
        service.commands,
    )
    acks = CounterMetricFamily(
        "gridflex_control_acks",
        "Acks published, by result (applied, clamped, rejected, stale, failed, ...)",
        labels=["result"],
    )
    results = dict(service.results)  # dict(): one C-level copy, safe beside the loop
    for result in sorted(ACK_RESULTS | set(results)):
        acks.add_metric([result], results.get(result, 0))
    yield acks
    dead = CounterMetricFamily(
        "gridflex_dead_letters",
        "Messages refused to the dead-letter topic, by component and reason kind",
        labels=["component", "reason"],
    )
    kinds = dict(service.dead_letter_kinds)
    for kind in sorted(set(DEAD_LETTER_KINDS) | set(kinds)):
        dead.add_metric(["control", kind], kinds.get(kind, 0))
    yield dead
    yield latency
    yield counter(
        "gridflex_control_watchdog_trips",
        "Assets sent back to their default setpoint because no command came in time",
        service.watchdog_trips,
    )
    mailboxes = [len(c.mailbox.items) for c in list(service.control.values())]
    yield gauge(
        "gridflex_control_mailbox_jobs",
        "Jobs waiting in the per-asset mailboxes, summed",
        sum(mailboxes),
    )
    yield gauge(
        "gridflex_control_mailbox_jobs_max",
        "Jobs waiting in the fullest per-asset mailbox",
        max(mailboxes, default=0),
    )
    yield gauge("gridflex_control_assets", "Assets this process controls", len(mailboxes))
    yield gauge(
        "gridflex_control_assets_faulted",
        "Assets with a latched fault (commands refused until cleared)",
        sum(1 for asset in list(service.assets) if service.faults.describe(asset)),
    )
    yield from mqtt_families([("control", service.mqtt.stats, service.mqtt)])
