"""``gridflex central --config central.toml``: the central level of a fleet of sites.

Every site gateway's broker bridges its retained ``gridflex/v1/{site}/summary`` to the
central broker (``gridflex broker-config --central-url``). The central dispatcher reads
those summaries, shares a fleet-level FCR capacity across the sites in proportion to their
flexibility (:mod:`gridflex.central_alloc`: a site whose summary is older than
``stale_after_s`` gets nothing, no site gets more than it can hold) and publishes each
site its ``target/1`` (retained, on ``gridflex/v1/{site}/target``) every ``interval_s``.
The bridge carries it down to the site, whose pipeline takes ``fcr_capacity_w`` as its
``[dispatch.fcr] capacity_w`` and shares it across its assets.

The configuration (``examples/central.toml``)::

    [central]
    id = "central"            # MQTT client id suffix
    interval_s = 1.0          # allocation period
    stale_after_s = 5.0       # a summary older than this (by receive time) takes no share
    target_valid_s = 30.0     # a site ignores a target received after this
    sites = ["site-a", "site-b", "site-c"]

    [mqtt]                    # the central broker, as in a site file
    url = "mqtt://127.0.0.1:1883"

    [service]
    fcr_capacity_w = 30000    # the fleet's FCR capacity, W
    min_duration_s = 0        # energy limit per site (when a summary states an energy)

With ``--metrics-listen HOST:PORT`` (or ``[central] metrics_listen``) it serves Prometheus
metrics (:func:`central_families`): summaries received and refused, allocation rounds and
their duration, targets published, fresh and stale sites, the fleet's requested, allocated
and short watts, and its MQTT client's counters.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gridflex import systemd
from gridflex.central_alloc import CentralAllocation, SiteFlex, allocate_fcr
from gridflex.config import ConfigError, MqttConfig, resolve_mqtt_credentials
from gridflex.config.errors import format_validation_error
from gridflex.contract import (
    ASSET_ID_PATTERN,
    PREFIX,
    ContractError,
    SiteSummary,
    SiteTarget,
    parse_payload,
    parse_topic,
    target_topic,
)
from gridflex.metrics import (
    Buckets,
    add_metrics_argument,
    counter,
    gauge,
    mqtt_families,
    serve_metrics,
)

__all__ = [
    "SUMMARY_FILTER",
    "CentralConfig",
    "CentralDispatcher",
    "CentralSection",
    "ServiceConfig",
    "add_arguments",
    "central_families",
    "load_central",
    "main",
    "parse_central",
    "run_central",
]

log = logging.getLogger(__name__)

#: What the central subscribes to: every site's summary.
SUMMARY_FILTER = f"{PREFIX}/+/summary"

_SiteId = Annotated[str, Field(pattern=ASSET_ID_PATTERN)]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CentralSection(_Table):
    """The ``[central]`` table."""

    id: _SiteId = "central"
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    stale_after_s: Annotated[float, Field(gt=0)] = 5.0
    target_valid_s: Annotated[float, Field(gt=0)] = 30.0
    sites: Annotated[list[_SiteId], Field(min_length=1)]
    metrics_listen: str | None = None  # HOST:PORT of /metrics; --metrics-listen wins


class ServiceConfig(_Table):
    """The ``[service]`` table: the fleet-level service the central shares."""

    fcr_capacity_w: Annotated[float, Field(ge=0)]
    min_duration_s: Annotated[float, Field(ge=0)] = 0.0


class CentralConfig(_Table):
    """A ``central.toml``."""

    central: CentralSection
    mqtt: MqttConfig = MqttConfig()
    service: ServiceConfig


def parse_central(raw: dict[str, Any], source: str | Path = "<memory>") -> CentralConfig:
    """Validate a central configuration; ``ConfigError`` names the source and the key."""
    try:
        return CentralConfig.model_validate(raw)
    except ValidationError as exc:
        message = format_validation_error(exc, raw, frozenset())
        raise ConfigError(f"config error in {source}: {message}") from None


def load_central(path: Path) -> CentralConfig:
    """Read a ``central.toml``; the MQTT credentials as for a site file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"config error in {path}: cannot read the file ({exc.strerror})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config error in {path}: not valid TOML ({exc})") from None
    config = parse_central(raw, path)
    mqtt = config.mqtt
    if mqtt.credentials is not None and not mqtt.credentials.is_absolute():
        mqtt = mqtt.model_copy(update={"credentials": path.resolve().parent / mqtt.credentials})
    return config.model_copy(update={"mqtt": resolve_mqtt_credentials(mqtt, path)})


@dataclass
class CentralDispatcher:
    """The central's state: the latest summary of each site, and the allocation rounds.

    No I/O: :meth:`on_summary` takes a summary and when it came, :meth:`allocate` makes
    the targets of one round.
    """

    config: CentralConfig
    latest: dict[str, SiteFlex] = field(default_factory=dict)
    seq: int = 0
    last: CentralAllocation | None = None
    summaries: int = 0  # summaries kept (of listed sites)
    refused: int = 0  # messages on the summary topics that were not a listed site's summary
    published: int = 0  # targets handed to the MQTT client
    round_s: Buckets = field(
        default_factory=lambda: Buckets((0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1))
    )

    def on_summary(self, summary: SiteSummary, received_ms: int) -> bool:
        """Keep a site's summary (its receive time decides staleness); False if unknown."""
        if summary.site not in self.config.central.sites:
            self.refused += 1
            return False
        self.summaries += 1
        self.latest[summary.site] = SiteFlex(
            summary.site, received_ms, summary.flex_charge_w, summary.flex_discharge_w
        )
        return True

    def allocate(self, now_ms: int) -> list[SiteTarget]:
        """One round: the targets of every configured site (0 W for a stale or silent one)."""
        c = self.config
        result = allocate_fcr(
            c.service.fcr_capacity_w,
            self.latest.values(),
            now_ms=now_ms,
            max_age_ms=round(c.central.stale_after_s * 1000),
            min_duration_s=c.service.min_duration_s,
        )
        self.last = result
        self.seq += 1
        valid_until = now_ms + round(c.central.target_valid_s * 1000)
        targets = []
        for site in c.central.sites:
            share = result.shares_w.get(site)
            if share is None:
                why = "stale summary" if site in result.stale else "no summary yet"
                reason = f"{why}: no share of the fleet's {result.requested_w:.0f} W"
            else:
                reason = (
                    f"share {share:.0f} W of {result.requested_w:.0f} W by flexibility "
                    f"{result.flex_w[site]:.0f} W"
                )
                if result.shortfall_w > 0.5:
                    reason += f"; fleet short by {result.shortfall_w:.0f} W"
            targets.append(
                SiteTarget(
                    site=site,
                    ts_ms=now_ms,
                    seq=self.seq,
                    fcr_capacity_w=round(share or 0.0, 1),
                    fleet_fcr_capacity_w=result.requested_w,
                    flex_w=round(result.flex_w.get(site, 0.0), 1),
                    valid_until_ms=valid_until,
                    reason=reason,
                )
            )
        return targets


def central_families(state: CentralDispatcher, client: Any) -> Iterator[Any]:
    """The central's Prometheus metrics (read at scrape time)."""
    yield counter("gridflex_central_summaries", "Site summaries received", state.summaries)
    yield counter(
        "gridflex_central_summaries_refused",
        "Messages on the summary topics refused (not a listed site's summary/1)",
        state.refused,
    )
    yield counter("gridflex_central_rounds", "Allocation rounds", state.seq)
    yield counter("gridflex_central_targets_published", "Targets published", state.published)
    yield state.round_s.family(
        "gridflex_central_round_seconds", "Duration of one allocation round (CPU, no I/O)"
    )
    last = state.last
    fresh = len(last.shares_w) if last else 0
    yield gauge("gridflex_central_sites_fresh", "Sites with a fresh summary", fresh)
    yield gauge(
        "gridflex_central_sites_stale",
        "Listed sites without a fresh summary",
        len(state.config.central.sites) - fresh,
    )
    yield gauge(
        "gridflex_central_requested_watts",
        "The fleet FCR capacity asked for",
        last.requested_w if last else 0.0,
    )
    yield gauge(
        "gridflex_central_allocated_watts",
        "The fleet FCR capacity shared out",
        last.allocated_w if last else 0.0,
    )
    yield gauge(
        "gridflex_central_shortfall_watts",
        "What the fresh sites cannot hold",
        last.shortfall_w if last else 0.0,
    )
    yield from mqtt_families([("central", client.stats, client)])


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def run_central(
    config: CentralConfig, stop: threading.Event, *, metrics_listen: str | None = None
) -> CentralDispatcher:
    """Subscribe to the summaries and publish targets every ``interval_s`` until ``stop``."""
    from gridflex.mqtt import MqttClient

    state = CentralDispatcher(config)
    lock = threading.Lock()

    def on_summary(topic: str, payload: bytes) -> None:
        received = _now_ms()
        try:
            parts = parse_topic(topic)
            summary = parse_payload(payload)
        except ContractError as exc:
            log.warning("refused a message on %s: %s", topic, exc)
            with lock:
                state.refused += 1
            return
        if not isinstance(summary, SiteSummary) or summary.site != parts.get("site"):
            log.warning("refused a message on %s: not this site's summary/1", topic)
            with lock:
                state.refused += 1
            return
        with lock:
            known = state.on_summary(summary, received)
        if not known:
            log.debug("summary of site %s, which central.sites does not list", summary.site)

    client = MqttClient(
        config.mqtt.url,
        f"gridflex-central-{config.central.id}",
        username=config.mqtt.username,
        password=config.mqtt.password,
        clean_session=True,
        queue_limit=config.mqtt.queue_limit,
        keepalive_s=config.mqtt.keepalive_s,
    )
    client.subscribe(SUMMARY_FILTER, on_summary)
    metrics = serve_metrics(
        metrics_listen or config.central.metrics_listen,
        "central",
        lambda: central_families(state, client),
    )
    client.start()
    supervised = systemd.supervised_thread(
        lambda: state.seq,  # a round a second: the watchdog pings while rounds go on
        is_ready=systemd.broker_up(client) or (lambda: True),
        ready_text=f"central {config.central.id}: {len(config.central.sites)} site(s)",
    )
    log.info(
        "central %s: %d site(s), fleet FCR %.0f W, broker %s",
        config.central.id,
        len(config.central.sites),
        config.service.fcr_capacity_w,
        config.mqtt.url,
    )
    try:
        with supervised:
            while not stop.wait(config.central.interval_s):
                with lock:
                    started = time.perf_counter()
                    targets = state.allocate(_now_ms())
                    state.round_s.observe(time.perf_counter() - started)
                    last = state.last
                for target in targets:
                    client.publish(target_topic(target.site), target.to_json(), qos=1, retain=True)
                state.published += len(targets)
                if last is not None:
                    log.debug(
                        "round %d: %.0f W allocated, %.0f W short, stale %s",
                        state.seq,
                        last.allocated_w,
                        last.shortfall_w,
                        ",".join(last.stale) or "none",
                    )
    finally:
        client.stop()
        if metrics is not None:
            metrics.close()
    return state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gridflex central``."""
    parser.add_argument("--config", required=True, type=Path, help="the central.toml")
    add_metrics_argument(parser)


def main(args: argparse.Namespace) -> int:
    """Run the central dispatcher until SIGINT or SIGTERM."""
    config = load_central(args.config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run_central(config, stop, metrics_listen=args.metrics_listen)
    return 0
