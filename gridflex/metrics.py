"""Prometheus metrics of the long-running commands, served over HTTP.

Each long-running command (``gridflex collect modbus``, ``collect ocpp``, ``pipeline``,
``control``) serves ``/metrics`` when ``--metrics-listen HOST:PORT`` or its key of the site
file's ``[metrics]`` table gives an address (see :func:`listen_address`); off otherwise.

The metrics are read at scrape time from the counters the processes already keep (their
``…Stats`` objects, MQTT client statistics, queue lengths): a :class:`ScrapeCollector`
calls the component's ``families`` function on each scrape, so the hot path pays nothing
for them. Where a process had no distribution to read, a :class:`Buckets` histogram (plain
integers, one ``bisect`` per observation) is kept beside its counters.

The scrape runs on the HTTP server's thread and reads attributes that the owning event
loop or Bytewax worker writes: single integer and length reads, which the GIL keeps whole;
a scrape may see one counter a message ahead of another, never a torn value.

Names follow the Prometheus conventions: the ``gridflex_`` prefix, ``_total`` for
counters, base units (``_seconds``); every process also serves ``gridflex_build_info``
and the client library's ``process_*`` metrics. ``docs/operations.md`` lists them.
"""

from __future__ import annotations

import argparse
import bisect
import logging
import platform
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gridflex import __version__
from gridflex.config import ConfigError, split_listen

if TYPE_CHECKING:
    from gridflex.config import SiteConfig
    from gridflex.mqtt import MqttStats

__all__ = [
    "LATENCY_BUCKETS_S",
    "Buckets",
    "MetricsServer",
    "ScrapeCollector",
    "add_metrics_argument",
    "build_info",
    "counter",
    "gauge",
    "listen_address",
    "mqtt_families",
    "serve_metrics",
]

log = logging.getLogger(__name__)

#: Upper bounds of the latency histograms, s (command and ack latencies: ms to seconds).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

Families = Callable[[], Iterable[Metric]]


class Buckets:
    """A histogram of plain integers: ``observe`` is one bisect and two additions.

    Written by one thread (the owner's loop), read by the scrape (see the module
    docstring).
    """

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        """The histogram as a Prometheus family (cumulative buckets, ``+Inf`` last)."""
        family = HistogramMetricFamily(name, documentation)
        counts = list(self.counts)
        cumulative: list[tuple[str, float]] = []
        seen = 0
        for bound, count in zip(self.bounds, counts, strict=False):
            seen += count
            cumulative.append((_bound_label(bound), seen))
        cumulative.append(("+Inf", seen + counts[-1]))
        family.add_metric([], cumulative, self.sum)
        return family


def _bound_label(bound: float) -> str:
    return repr(float(bound))


def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    """An unlabelled counter; ``name`` without ``_total`` (the family adds it)."""
    return CounterMetricFamily(name, documentation, value=value)


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    """An unlabelled gauge."""
    return GaugeMetricFamily(name, documentation, value=value)


def build_info(component: str) -> GaugeMetricFamily:
    """``gridflex_build_info{version, component, python}`` = 1."""
    family = GaugeMetricFamily(
        "gridflex_build_info",
        "Always 1; the labels say which gridflex and Python this process runs",
        labels=["version", "component", "python"],
    )
    family.add_metric([__version__, component, platform.python_version()], 1)
    return family


class _Pending(Protocol):
    def pending(self) -> int: ...


def mqtt_families(clients: Iterable[tuple[str, MqttStats, Any]]) -> Iterator[Metric]:
    """The MQTT clients' counters, labelled ``client`` (its role in the process).

    ``clients`` holds ``(role, stats, client)``; ``client.pending()`` (when it has one)
    gives the messages published and not yet acknowledged.
    """
    rows = [(role, stats.as_dict(), client) for role, stats, client in clients]
    specs = (
        ("gridflex_mqtt_published", "published", "MQTT messages published"),
        ("gridflex_mqtt_acknowledged", "acknowledged", "MQTT messages the broker acknowledged"),
        ("gridflex_mqtt_dropped", "dropped", "MQTT messages dropped (outgoing queue full)"),
        ("gridflex_mqtt_received", "received", "MQTT messages received"),
        ("gridflex_mqtt_connects", "connects", "MQTT connections established (CONNACK)"),
        ("gridflex_mqtt_disconnects", "disconnects", "MQTT connections lost or closed"),
        ("gridflex_mqtt_read_pauses", "read_pauses", "Times reading paused (queue full)"),
    )
    for name, key, doc in specs:
        family = CounterMetricFamily(name, doc, labels=["client"])
        for role, values, _client in rows:
            family.add_metric([role], values[key])
        yield family
    pending = GaugeMetricFamily(
        "gridflex_mqtt_pending_messages",
        "MQTT messages published and not yet acknowledged (queued or in flight)",
        labels=["client"],
    )
    for role, values, client in rows:
        pending_of = getattr(client, "pending", None)
        value = (
            pending_of() if callable(pending_of) else values["published"] - values["acknowledged"]
        )
        pending.add_metric([role], max(0, value))
    yield pending


class ScrapeCollector(Collector):
    """A collector that asks ``families`` for the metrics on every scrape."""

    def __init__(self, component: str, families: Families) -> None:
        self.component = component
        self._families = families

    def collect(self) -> Iterator[Metric]:
        """``gridflex_build_info`` and the component's families (logged, never raised)."""
        yield build_info(self.component)
        try:
            metrics = list(self._families())
        except Exception:  # a scrape must not take the process down
            log.exception("%s: metrics collection failed", self.component)
            return
        yield from metrics


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    host: str
    port: int
    registry: CollectorRegistry
    _server: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving (idempotent)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def listen_address(site: SiteConfig, component: str, override: str | None) -> str | None:
    """Where ``component`` serves its metrics: ``override`` (the option), else the site file's.

    ``component`` is one of :data:`~gridflex.config.METRICS_COMPONENTS`; ``None``: not
    served. A malformed ``override`` raises :class:`~gridflex.config.ConfigError`.
    """
    if override is not None:
        try:
            split_listen(override)
        except ValueError as exc:
            raise ConfigError(f"--metrics-listen: {exc}, got {override!r}") from None
        return override
    return getattr(site.metrics, component)


def serve_metrics(listen: str | None, component: str, families: Families) -> MetricsServer | None:
    """Serve ``families`` (and build info, process metrics) on ``listen``; None when unset.

    Raises :class:`~gridflex.config.ConfigError` when the address cannot be bound (the
    command then exits 2 naming it).
    """
    if listen is None:
        return None
    host, port = split_listen(listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeCollector(component, families))
    ProcessCollector(registry=registry)
    try:
        server, thread = start_http_server(port, host, registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve {component} metrics on {listen}: {exc}") from None
    metrics = MetricsServer(host, port, registry, server, thread)
    log.info("%s: metrics on %s", component, metrics.url)
    return metrics


def add_metrics_argument(parser: argparse.ArgumentParser) -> None:
    """``--metrics-listen HOST:PORT`` (overrides the command's key of ``[metrics]``)."""
    parser.add_argument(
        "--metrics-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics on http://HOST:PORT/metrics "
        "(default: the command's key of the site file's [metrics] table; unset = off)",
    )
