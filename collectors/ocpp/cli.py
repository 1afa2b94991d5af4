"""``gridflex collect ocpp --site FILE``: run the CSMS until SIGINT or SIGTERM.

It also executes ``gridflex control``'s setpoint requests (``collectors.ocpp.requests``).
Its MQTT client is the native asyncio client; ``main`` takes the client's maker as a
keyword (``mqtt_factory``) so that the benchmarks' baseline (``bench/baselines.py``) runs
the same CSMS on paho.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import replace

from collectors.ocpp import gc_policy
from collectors.ocpp import metrics as ocpp_metrics
from collectors.ocpp.csms import COMPONENT, Csms, CsmsSettings, collector_will
from collectors.ocpp.requests import RequestServer
from collectors.ocpp.security import KeyFileError, check_private_key_file
from gridflex import events, systemd
from gridflex.config import ConfigError, load_site
from gridflex.metrics import add_metrics_argument, listen_address, serve_metrics
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.mqtt_drops import DropWatch, dropped_count
from gridflex.mqtt_factory import MqttClientFactory
from gridflex.runtime import stop_on_signals
from gridflex.shard import ONE, add_shard_argument

__all__ = ["add_arguments", "main", "run"]

log = logging.getLogger(__name__)

_STATS_EVERY_S = 60.0
_TICK_S = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gridflex collect ocpp``."""
    parser.add_argument("--site", required=True, help="site file (TOML)")
    parser.add_argument("--host", help="listen address (default: site.ocpp.host)")
    parser.add_argument("--port", type=int, help="listen port (default: site.ocpp.port)")
    add_metrics_argument(parser)
    add_shard_argument(parser, "stations (a station's EVSEs stay together)")


def _mqtt_dropped(csms: Csms) -> int:
    """Messages the CSMS's MQTT client dropped (its count; else the refused publishes)."""
    dropped = dropped_count(csms.publisher)
    return csms.stats.telemetry_dropped if dropped is None else dropped


async def run(
    csms: Csms,
    stop: asyncio.Event,
    *,
    policy: gc_policy.FreezePolicy | None = None,
    tick_s: float = _TICK_S,
    requests: RequestServer | None = None,
    watchdog: systemd.Watchdog | None = None,
) -> None:
    """Serve until ``stop`` is set, then stop cleanly.

    ``requests`` (when given) takes control's setpoint requests from MQTT while serving.
    ``watchdog`` (when given) hears a beat every tick (systemd's watchdog, READY=1 once
    the CSMS listens).

    Logs counters every minute and keeps full garbage collections short
    (``collectors.ocpp.gc_policy``, checked every ``tick_s``): what start-up built is
    frozen at once, the stations' long-lived objects once their connections have settled.
    """
    await csms.start()
    if requests is not None:
        requests.start()
    systemd.ready(f"CSMS listening on {csms.settings.host}:{csms.settings.port}")
    gc_policy.apply("freeze")
    policy = policy or gc_policy.FreezePolicy()
    try:
        last = csms.stats.telemetry_published
        next_stats = time.monotonic() + _STATS_EVERY_S
        drops = DropWatch(csms.publisher)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick_s)
            if watchdog is not None:
                watchdog.beat()
            stats = csms.stats
            now = time.monotonic()
            action = policy.decide(
                now,
                connections=stats.connections,
                disconnections=stats.disconnections,
                connected=len(csms.connected_stations),
            )
            if action is not None:
                gc_policy.apply(action)
            dropped = drops.due()
            if dropped is not None:  # never silent: the retained presence says it
                csms.publish_presence(dropped)
            if now >= next_stats:
                next_stats = now + _STATS_EVERY_S
                log.info(
                    "ocpp: %d stations connected, %.0f telemetry/min, %d dropped, %d refused",
                    len(csms.connected_stations),
                    stats.telemetry_published - last,
                    _mqtt_dropped(csms),
                    stats.bad_frames,
                )
                systemd.status(f"{len(csms.connected_stations)} stations connected")
                last = stats.telemetry_published
    finally:
        if requests is not None:
            await requests.stop()
        await csms.stop()


def main(args: argparse.Namespace, *, mqtt_factory: MqttClientFactory = AsyncMqttClient) -> int:
    """Run the CSMS; exit 0 after SIGINT/SIGTERM, 2 for a configuration problem.

    ``mqtt_factory`` is the baseline's seam (module docstring); the command always runs
    the default.
    """
    site = load_site(args.site)
    settings = CsmsSettings.from_site(site)
    if args.host:
        settings = replace(settings, host=args.host)
    if args.port is not None:
        settings = replace(settings, port=args.port)
    if settings.security_profile >= 2 and settings.tls_key is not None:
        try:
            check_private_key_file(settings.tls_key)
        except KeyFileError as exc:
            raise ConfigError(f"config error in {site.source}: ocpp.tls_key: {exc}") from None
    ca = settings.tls_ca
    if settings.security_profile == 3 and ca is not None and not ca.is_file():
        raise ConfigError(
            f"config error in {site.source}: ocpp.tls_ca: {ca}: expected a "
            "readable PEM file (the CA of the station certificates)"
        )

    shard = getattr(args, "shard", ONE)
    component = shard.component(COMPONENT)
    foreign: frozenset[str] = frozenset()
    if shard.sharded:
        owned = {sid: cfg for sid, cfg in settings.stations.items() if shard.owns(sid)}
        foreign = frozenset(
            evse.asset_id
            for sid, cfg in settings.stations.items()
            if sid not in owned
            for evse in cfg.evses
        )
        log.info(
            "shard %s owns %d of the site's %d stations",
            shard,
            len(owned),
            len(settings.stations),
        )
        settings = replace(settings, stations=owned)
    boot_id = uuid.uuid4().hex[:12]
    client_suffix = f"-{component}" if shard.sharded else ""
    mqtt = mqtt_factory(
        site.mqtt.url,
        f"gridflex-ocpp-{site.id}{client_suffix}",
        username=site.mqtt.username,
        password=site.mqtt.password,
        will=collector_will(site.id, boot_id, component),
        queue_limit=site.mqtt.queue_limit,
        keepalive_s=site.mqtt.keepalive_s,
    )
    csms = Csms(settings, mqtt, boot_id=boot_id, component=component)
    requests = RequestServer(csms, mqtt, foreign=foreign)
    metrics = serve_metrics(
        listen_address(site, "collect_ocpp", args.metrics_listen),
        "collect_ocpp",
        lambda: ocpp_metrics.families(csms),
    )

    async def _run() -> None:
        stop = stop_on_signals()
        events.configure(mqtt, site.id, "collect-ocpp")  # fault codes on MQTT, into the history
        await mqtt.start()  # no wait: stations are served while the broker is unreachable
        try:
            async with systemd.supervised(connected=systemd.broker_up(mqtt)) as watchdog:
                await run(csms, stop, requests=requests, watchdog=watchdog)
        finally:
            await mqtt.stop(flush_timeout_s=5.0)

    try:
        asyncio.run(_run())
    except KeyFileError as exc:
        raise ConfigError(f"config error in {site.source}: ocpp.tls_key: {exc}") from None
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 1
    finally:
        if metrics is not None:
            metrics.close()
    log.info("ocpp collector stopped: %s", csms.stats)
    return 0
