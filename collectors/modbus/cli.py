"""``gridflex collect modbus``: options, the MQTT client, the GC freeze, the stats summary.

One path per hop: the lean Modbus client and the native asyncio MQTT client. ``main``
takes both makers as keywords (``connection``, ``mqtt_factory``) so that the benchmarks'
baseline (``bench/baselines.py``) runs the same collector on pymodbus and paho.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import uuid
from pathlib import Path

from collectors.modbus import metrics as modbus_metrics
from collectors.modbus.connection import ConnectionFactory
from collectors.modbus.fast import LeanModbusClient
from collectors.modbus.poller import (
    COMPONENT,
    CollectorStats,
    collector_status,
    run,
)
from gridflex import systemd
from gridflex.config import load_site
from gridflex.contract import collector_topic
from gridflex.metrics import add_metrics_argument, listen_address, serve_metrics
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.mqtt_factory import MqttClientFactory
from gridflex.net import raise_open_file_limit
from gridflex.runtime import stop_on_signals
from gridflex.shard import ONE, add_shard_argument

__all__ = ["MQTT_MAX_INFLIGHT", "add_arguments", "main", "stats_summary"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gridflex collect modbus``."""
    parser.add_argument("--site", type=Path, required=True, help="site file (TOML)")
    add_metrics_argument(parser)
    add_shard_argument(parser, "inverters")
    parser.add_argument("--stats-file", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stats-warmup-s", type=float, default=0.0, help=argparse.SUPPRESS)


def stats_summary(stats: CollectorStats) -> dict[str, float | int | None]:
    """The collector's own timing statistics, as logged and written by ``--stats-file``."""
    return {
        "polls": stats.lateness.polls,
        "missed": stats.missed,
        "published": stats.published,
        "failures": stats.failures,
        "invalid": stats.invalid,
        "elapsed_s": round(stats.window_s, 3),
        "lateness_p50_ms": stats.lateness.percentile_ms(0.50),
        "lateness_p99_ms": stats.lateness.percentile_ms(0.99),
        "lateness_max_ms": round(stats.lateness.max_ms, 3),
    }


_BROKER_NOT_YET = "MQTT broker %s not reachable yet; messages queue until it is"

#: The in-flight window for telemetry: 0 = unbounded. With a window, paho (the baseline)
#: scans its in-flight messages on every PUBACK, and a window of 100 stalled the
#: collector's 5,000 messages a second behind a busy loop; memory stays bounded by
#: ``mqtt.queue_limit``.
MQTT_MAX_INFLIGHT = 0


def _freeze_gc() -> None:
    """Move what start-up built (plans, tables, clients) out of the garbage collector's way.

    At 1,000 inverters a full collection walked ~200,000 start-up objects and paused the
    loop for up to ~190 ms, several times a minute; frozen, the longest was ~25 ms.
    """
    gc.freeze()
    log.info("all devices tried; %d start-up objects frozen for the GC", gc.get_freeze_count())


def main(
    args: argparse.Namespace,
    *,
    connection: ConnectionFactory = LeanModbusClient,
    mqtt_factory: MqttClientFactory = AsyncMqttClient,
) -> int:
    """Run ``gridflex collect modbus`` until SIGINT/SIGTERM; 0 after a clean shutdown.

    ``connection`` and ``mqtt_factory`` are the baseline's seams (module docstring); the
    command always runs the defaults.
    """
    site = load_site(args.site)
    if not site.inverters:
        log.error("%s has no inverter assets to poll", site.source or args.site)
        return 2
    shard = getattr(args, "shard", ONE)
    component = shard.component(COMPONENT)
    if shard.sharded:
        owned = shard.select(site.inverters, "id")
        log.info(
            "shard %s owns %d of the site's %d inverters", shard, len(owned), len(site.inverters)
        )
        site = site.model_copy(update={"assets": owned})
    raise_open_file_limit()
    boot = uuid.uuid4().hex[:12]
    will = collector_status(site, boot, online=False, component=component)
    client_suffix = f"-{component}" if shard.sharded else ""
    mqtt = mqtt_factory(
        site.mqtt.url,
        f"gridflex-collect-modbus-{site.id}{client_suffix}",
        username=site.mqtt.username,
        password=site.mqtt.password,
        will=(collector_topic(site.id, component), will.to_json()),
        queue_limit=site.mqtt.queue_limit,
        keepalive_s=site.mqtt.keepalive_s,
        max_inflight=MQTT_MAX_INFLIGHT,
    )
    log.info(
        "polling %d inverters every %d ms (boot %s)",
        len(site.inverters),
        site.modbus.poll_interval_ms,
        boot,
    )

    stats = CollectorStats()
    metrics = serve_metrics(
        listen_address(site, "collect_modbus", args.metrics_listen),
        "collect_modbus",
        lambda: modbus_metrics.families(stats, mqtt),
    )

    def _discovered() -> None:
        _freeze_gc()
        systemd.ready(f"polling {len(site.inverters)} inverters")

    async def _run() -> CollectorStats:
        stop = stop_on_signals()
        await mqtt.start()
        if not await mqtt.wait_connected(10.0):
            log.warning(_BROKER_NOT_YET, site.mqtt.url)
        try:
            async with systemd.supervised(
                lambda: (
                    stats.lateness.polls,
                    stats.published,
                    stats.failures,
                    stats.slot_failures,
                ),
                connected=systemd.broker_up(mqtt),
                # a device down for good is retried every backoff_max_s: not a stall
                stall_s=max(30.0, 2 * site.modbus.backoff_max_s + site.modbus.timeout_s),
            ):
                return await run(
                    site,
                    mqtt,
                    stop,
                    boot=boot,
                    stats=stats,
                    warmup_s=args.stats_warmup_s,
                    connection=connection,
                    on_discovered=_discovered,
                    component=component,
                )
        finally:
            await mqtt.stop(flush_timeout_s=5.0)

    try:
        asyncio.run(_run())
    finally:
        if metrics is not None:
            metrics.close()
    summary = stats_summary(stats)
    log.info("modbus collector stopped: %s", json.dumps(summary))
    if args.stats_file is not None:
        args.stats_file.write_text(json.dumps(summary) + "\n", encoding="utf-8")
    return 0
