"""``gridflex pipeline``: run the dataflow of :mod:`pipelines.flow` until a signal.

``gridflex pipeline --site FILE [--data-dir DIR] [--workers N]`` runs it until SIGINT or
SIGTERM, then ends the MQTT source, lets the open windows close and the sinks flush, and
exits 0. With ``[pipeline] recovery`` (on by default) Bytewax snapshots the state every
``snapshot_interval_s`` into ``recovery_dir`` (default ``{history}/recovery``) and a
restarted pipeline resumes from it. With ``[pipeline] durable_ack`` (on by default) the
source acknowledges a message to the broker only once it is in the write-ahead log in
``wal_dir`` (default ``{history}/wal``), which a restarted pipeline replays first
(``--durable-ack off`` turns it off for one run).

A Bytewax cluster: ``--addresses h1:p1,h2:p2 --process-id I`` (``--processes N`` checks the
count) runs process ``I`` of the cluster, Bytewax's own ``-a``/``-i``. The dataflow is
keyed by asset, so Bytewax routes each asset's readings to one worker of the cluster
whichever process received them; every process subscribes through a shared subscription
(``$share/{client_id}/…``) so the broker splits the telemetry, with its own MQTT client
ids and write-ahead logs (``{wal_dir}/{client_id}-{partition}``). Start every process
of the cluster with the same site file and history folder; stop them all together.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import gc
import logging
import signal
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main

from gridflex import systemd
from gridflex.metrics import add_metrics_argument, listen_address, serve_metrics
from pipelines import metrics as pipeline_metrics
from pipelines.flow import FlowOptions, build_flow, default_mqtt_sink, mqtt_source
from pipelines.site import SiteLike

__all__ = [
    "Cluster",
    "add_arguments",
    "main",
    "parse_cluster",
    "recovery_config",
    "run",
    "wal_dir",
]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``gridflex pipeline``."""
    parser.add_argument("--site", required=True, type=Path, help="site file (TOML)")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="history directory (default: history.dir)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="Bytewax workers in this process (default 1)"
    )
    parser.add_argument(
        "--lateness-ms",
        type=int,
        default=None,
        help="allowed lateness of frequency samples, ms (default: pipeline.allowed_lateness_ms)",
    )
    parser.add_argument(
        "--client-id",
        default=None,
        help="MQTT client id prefix, names the persistent session "
        "(default gridflex-pipeline-{site})",
    )
    add_metrics_argument(parser)
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="processes in the Bytewax cluster (default: as many as --addresses)",
    )
    parser.add_argument(
        "--process-id",
        type=int,
        default=None,
        help="this process's index in the cluster, from 0 (Bytewax -i)",
    )
    parser.add_argument(
        "--addresses",
        default=None,
        help="host:port of every process of the cluster, comma-separated, in process-id "
        "order (Bytewax -a)",
    )
    parser.add_argument(
        "--durable-ack",
        choices=("on", "off"),
        default=None,
        help="acknowledge telemetry and acks to the broker only once in the write-ahead log "
        "(default: pipeline.durable_ack, on)",
    )


class _StopOnSignal:
    """Set a stop event on the first SIGINT/SIGTERM; a second one aborts."""

    def __init__(self, stop_event: threading.Event) -> None:
        self.stop_event = stop_event
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_event.is_set():
            log.warning("second %s: aborting", signal.Signals(signum).name)
            raise KeyboardInterrupt
        log.info("%s: stopping the pipeline", signal.Signals(signum).name)
        self.stop_event.set()

    def __enter__(self) -> _StopOnSignal:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The place of this process in a Bytewax cluster (``-i``/``-a``); one process by default."""

    process_id: int = 0
    addresses: tuple[str, ...] = ()

    @property
    def processes(self) -> int:
        """Processes in the cluster (1 without ``addresses``)."""
        return max(1, len(self.addresses))


def parse_cluster(processes: int | None, process_id: int | None, addresses: str | None) -> Cluster:
    """Check ``--processes``, ``--process-id``, ``--addresses``; ``ValueError`` if they disagree."""
    if addresses is None:
        if (processes or 1) != 1 or (process_id or 0) != 0:
            raise ValueError("a cluster needs --addresses host:port,... (one per process)")
        return Cluster()
    hosts = tuple(a.strip() for a in addresses.split(",") if a.strip())
    for address in hosts:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--addresses: expected host:port, got {address!r}")
    if processes is not None and processes != len(hosts):
        raise ValueError(f"--processes {processes} but {len(hosts)} --addresses")
    if process_id is None or not 0 <= process_id < len(hosts):
        raise ValueError(f"--process-id: expected 0..{len(hosts) - 1}, got {process_id}")
    return Cluster(process_id, hosts)


def recovery_config(
    site: SiteLike, data_dir: str | Path | None = None, *, workers: int = 1
) -> RecoveryConfig | None:
    """Bytewax recovery for ``site`` (None when ``[pipeline] recovery = false``).

    The database lives in ``recovery_dir``, default ``{history}/recovery``; it is created
    on first use with one partition per worker. A restarted pipeline resumes every step's
    state from the last snapshot; the broker's persistent session redelivers what was not
    acknowledged.

    In a cluster ``workers`` counts the workers of every process; the processes of one
    machine share the folder (a lock file keeps them from creating it twice).
    """
    if not site.pipeline.recovery:
        return None
    history = Path(data_dir if data_dir is not None else site.history.dir)
    db_dir = Path(site.pipeline.recovery_dir or history / "recovery")
    db_dir.mkdir(parents=True, exist_ok=True)
    with (db_dir / ".init.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not any(db_dir.glob("part-*.sqlite3")):
            init_db_dir(db_dir, max(1, workers))
            log.info("recovery database created in %s (%d partitions)", db_dir, max(1, workers))
    return RecoveryConfig(str(db_dir))


def wal_dir(
    site: SiteLike, data_dir: str | Path | None = None, *, durable_ack: bool | None = None
) -> Path | None:
    """The source's write-ahead log folder, or None when durable acknowledgement is off.

    ``durable_ack`` overrides ``[pipeline] durable_ack``; the folder is ``[pipeline]
    wal_dir``, default ``{history}/wal``.
    """
    if not (site.pipeline.durable_ack if durable_ack is None else durable_ack):
        return None
    history = Path(data_dir if data_dir is not None else site.history.dir)
    return Path(site.pipeline.wal_dir or history / "wal")


def run(
    site: SiteLike,
    data_dir: str | Path | None = None,
    *,
    workers: int = 1,
    options: FlowOptions | None = None,
    stop_event: threading.Event | None = None,
    durable_ack: bool | None = None,
    metrics_listen: str | None = None,
    cluster: Cluster | None = None,
) -> list[str]:
    """Run the dataflow in this process until SIGINT/SIGTERM (or ``stop_event``).

    Must be called from the main thread (signal handlers). The first signal ends the MQTT
    source; the dataflow then drains, closes its windows and flushes its sinks. A second
    signal aborts.

    ``durable_ack`` overrides ``[pipeline] durable_ack`` when ``options.wal_dir`` is unset
    (see :func:`wal_dir`). ``metrics_listen`` (``HOST:PORT``): serve the Prometheus
    metrics there while the dataflow runs. ``cluster``: run as one process of a Bytewax
    cluster (module docstring).

    Returns:
        Why the input ended early, if it did (a receiver process died); empty after a
        requested stop.

    """
    stop_event = stop_event or threading.Event()
    options = options or FlowOptions()
    cluster = cluster or Cluster()
    options = dataclasses.replace(
        options, process_id=cluster.process_id, processes=cluster.processes
    )
    if options.wal_dir is None:
        options = dataclasses.replace(
            options, wal_dir=wal_dir(site, data_dir, durable_ack=durable_ack)
        )
    source = mqtt_source(site, options, stop_event)
    sink = default_mqtt_sink(site, options)
    dead_letters: Counter[str] = Counter()
    flow = build_flow(
        site,
        data_dir,
        options=options,
        source=source,
        mqtt_sink=sink,
        stop_event=stop_event,
        dead_letters=dead_letters,
    )
    metrics = serve_metrics(
        metrics_listen, "pipeline", lambda: pipeline_metrics.families(source, sink, dead_letters)
    )
    log.info(
        "pipeline for site %s: broker %s, history in %s, %d worker(s), process %d of %d, "
        "dispatch %s",
        site.id,
        site.mqtt.url,
        data_dir if data_dir is not None else site.history.dir,
        workers,
        cluster.process_id,
        cluster.processes,
        site.dispatch.mode,
    )
    started_s = time.monotonic()
    recovery = recovery_config(site, data_dir, workers=workers * cluster.processes)
    # Everything built so far (modules, models, the flow) lives as long as the process:
    # keep it out of every later full collection, whose pauses every reading waits behind.
    gc.collect()
    gc.freeze()
    try:
        with (
            _StopOnSignal(stop_event),
            systemd.supervised_thread(
                lambda: source.batches,
                is_ready=lambda: source.batches > 0,
                ready_text=f"dataflow running for site {site.id}",
            ),
        ):
            cli_main(
                flow,
                workers_per_process=workers,
                process_id=cluster.process_id if cluster.addresses else None,
                addresses=list(cluster.addresses) if cluster.addresses else None,
                epoch_interval=timedelta(seconds=site.pipeline.snapshot_interval_s),
                recovery_config=recovery,
            )
    finally:
        if metrics is not None:
            metrics.close()
    if source.failures:
        log.error(
            "pipeline stopped after %.1f s: %s", time.monotonic() - started_s, source.failures
        )
    else:
        log.info("pipeline stopped cleanly after %.1f s", time.monotonic() - started_s)
    return source.failures


def main(args: argparse.Namespace) -> int:
    """``gridflex pipeline``: run until SIGINT/SIGTERM; 0 after a clean shutdown."""
    from gridflex.config import load_site

    site = load_site(args.site)
    try:
        cluster = parse_cluster(args.processes, args.process_id, args.addresses)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    durable = None if args.durable_ack is None else args.durable_ack == "on"
    options = FlowOptions(lateness_ms=args.lateness_ms, client_id=args.client_id)
    failures = run(
        site,
        args.data_dir,
        workers=args.workers,
        options=options,
        durable_ack=durable,
        metrics_listen=listen_address(site, "pipeline", args.metrics_listen),
        cluster=cluster,
    )
    return 1 if failures else 0
