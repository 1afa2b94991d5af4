"""The pipeline's options, subscriptions and MQTT endpoints (:mod:`pipelines.flow` wires them).

:class:`FlowOptions` tunes the dataflow; :func:`pipeline_filters` lists what the pipeline
subscribes to; :func:`mqtt_source` and :func:`default_mqtt_sink` build its source and its
publisher on the site's broker, one shared-subscription subscriber per process of a
Bytewax cluster.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gridflex.contract import PREFIX, event_filter, target_topic
from pipelines.mqtt_io import MqttSink, MqttSource
from pipelines.site import SiteLike
from pipelines.validate import DEFAULT_MAX_FUTURE_MS

__all__ = [
    "FlowOptions",
    "ack_filter",
    "default_mqtt_sink",
    "history_filters",
    "mqtt_source",
    "pipeline_filters",
    "telemetry_filter",
    "wal_retention_s",
]


@dataclass(frozen=True)
class FlowOptions:
    """Tuning of the dataflow (defaults suit a live site).

    Attributes:
        lateness_ms: How far behind the newest reading a reading may arrive and still
            count in its frequency window, ms; ``None`` = ``site.pipeline.allowed_lateness_ms``.
        idle_timeout_ms: After this long without a reading (by receive time), the source's
            heartbeats advance the windows' watermark, so the last window closes when data
            stops, ms.
        max_future_ms: Readings further ahead of the pipeline clock are refused, ms.
        history_partitions: Parallel Parquet writers per stream.
        flush_rows: Rows buffered before a Parquet file is written.
        flush_interval_s: Longest time a row waits in memory before it is written, s.
        dedup_capacity: ``(boot, seq)`` keys remembered per asset by the history sink.
        mqtt_partitions: MQTT subscribers (> 1 uses a shared subscription).
        mqtt_receiver: Where paho runs: ``"process"`` (a child process, so it does not
            compete with the dataflow for the GIL) or ``"thread"``.
        client_id: MQTT client id prefix; ``None`` = ``gridflex-pipeline-{site}``. The id
            names the broker's persistent session: keep it stable across restarts.
        wal_dir: Durable acknowledgement: the source's write-ahead logs live here, and
            are replayed on start (:mod:`pipelines.wal`); ``None``: PUBACK on receipt.
            ``gridflex pipeline`` sets it from ``[pipeline] durable_ack`` / ``wal_dir``.
        process_id: This process's index in a Bytewax cluster (``gridflex pipeline
            --process-id``), from 0.
        processes: Processes in the cluster; more than one subscribes through a shared
            subscription, each process with its own subscribers (``MqttSource``).

    """

    lateness_ms: int | None = None
    idle_timeout_ms: int = 2000
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS
    history_partitions: int = 1
    flush_rows: int = 50_000
    flush_interval_s: float = 5.0
    dedup_capacity: int = 1024
    mqtt_partitions: int = 1
    mqtt_receiver: Literal["process", "thread"] = "process"
    client_id: str | None = None
    wal_dir: Path | None = None
    process_id: int = 0
    processes: int = 1


def wal_retention_s(site: SiteLike, opts: FlowOptions) -> float:
    """When a sealed write-ahead log segment is covered (see :mod:`pipelines.wal`), s.

    Its rows have left the history buffer (``flush_interval_s``) and the epoch that held
    them is in a completed Bytewax snapshot (at most two snapshot intervals), plus slack.
    """
    return opts.flush_interval_s + 2 * site.pipeline.snapshot_interval_s + 5.0


def telemetry_filter(site_id: str) -> str:
    """Return the subscription ``gridflex/v1/{site}/+/+/telemetry``."""
    return f"{PREFIX}/{site_id}/+/+/telemetry"


def ack_filter(site_id: str) -> str:
    """Return the subscription ``gridflex/v1/{site}/dispatch/+/ack`` (the writer's acks)."""
    return f"{PREFIX}/{site_id}/dispatch/+/ack"


def history_filters(site_id: str) -> tuple[str, ...]:
    """What only goes to the history: asset statuses, the CSMS's sessions, fault events.

    The events (``gridflex/v1/{site}/event/+``, ``event/1``) come from every component
    that detects faults (``gridflex control``, the CSMS), wherever it runs.
    """
    site = f"{PREFIX}/{site_id}"
    return (
        f"{site}/inverter/+/status",
        f"{site}/evse/+/status",
        f"{site}/evse/+/session",
        event_filter(site_id),
    )


def pipeline_filters(site_id: str) -> tuple[str, ...]:
    """What the pipeline subscribes to: telemetry, acks, statuses, sessions, events, target.

    The target, ``gridflex/v1/{site}/target``, comes from ``gridflex central`` through the
    site broker's bridge.
    """
    return (
        telemetry_filter(site_id),
        ack_filter(site_id),
        *history_filters(site_id),
        target_topic(site_id),
    )


def _client_id(site: SiteLike, opts: FlowOptions) -> str:
    return opts.client_id or f"gridflex-pipeline-{site.id}"


def mqtt_source(
    site: SiteLike, options: FlowOptions | None = None, stop_event: threading.Event | None = None
) -> MqttSource:
    """The site's telemetry and ack subscriptions as a Bytewax source (ends on ``stop_event``)."""
    opts = options or FlowOptions()
    return MqttSource(
        site.mqtt.url,
        pipeline_filters(site.id),
        client_id=_client_id(site, opts),
        stop_event=stop_event or threading.Event(),
        partitions=opts.mqtt_partitions,
        username=site.mqtt.username,
        password=site.mqtt.password,
        receiver=opts.mqtt_receiver,
        wal_dir=opts.wal_dir,
        wal_retention_s=wal_retention_s(site, opts),
        wal_segment_s=site.pipeline.snapshot_interval_s,
        receive_queue=site.pipeline.receive_queue,
        process_id=opts.process_id,
        processes=opts.processes,
    )


def default_mqtt_sink(site: SiteLike, options: FlowOptions | None = None) -> MqttSink:
    """The dataflow's publisher on the site's broker (one client per worker)."""
    opts = options or FlowOptions()
    return MqttSink(
        site.mqtt.url,
        client_id=f"{_client_id(site, opts)}-out-{os.getpid()}",
        username=site.mqtt.username,
        password=site.mqtt.password,
        queue_limit=site.mqtt.queue_limit,
    )
