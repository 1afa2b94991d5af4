"""Benchmark: scale-out within a site, collector shards and a Bytewax pipeline cluster.

Collectors. Starts Mosquitto and N simulated SunSpec inverters (``gridflex sim
inverters``, one simulator process per 500), then for K = 1, 2, 4 runs K ``gridflex
collect modbus --shard i/K`` processes on the same site for ``--warmup-s`` +
``--duration-s`` (after one unmeasured run that warms the simulators up) and prints:
assets per process, polls/s (all shards) against the schedule's, missed polls, the
p50/p99 poll lateness (the worst shard's, from each shard's own ``--stats-file``), the
collectors' CPU % together (100 = one core) and their CPU per 1,000 assets (% of a core).

Pipeline. For P = 1, 2 runs ``gridflex pipeline`` as a Bytewax cluster of P processes
(``--addresses``/``--process-id``; each process one subscriber of the shared subscription
``$share/gridflex-pipeline-{site}/…``), publishes N inverters' telemetry every 200 ms from
this process (``bench._harness.publish_telemetry``), and prints: messages/s published and
written to the history (de-duplicated), the grid-frequency windows' end-to-end delay
(window end to MQTT, p50/p99; the 500 ms allowed lateness is part of it, as in
``bench/pipeline.py``), the pipeline processes' CPU % together and per 1,000 assets,
and each process's own (with its MQTT receiver; the process that holds the site-keyed
steps and the history sinks' partitions carries more).

    .venv/bin/python bench/scale.py --quick          # N = 200, short runs (~2 min)
    .venv/bin/python bench/scale.py -n 1000          # 20 s measured per run
    .venv/bin/python bench/scale.py --collectors 1 --collectors 2 --pipelines 0

The machine's cores are shared by the simulators, the broker, the publisher and what is
measured: more processes than cores measure contention, not scale. ``--central`` adds the
central level (3, 10 and 30 sites: summary bytes upward, allocation latency) by running
``bench/central.py`` (:func:`central_rows`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench._harness import (
    INTERVAL_S,
    busy_s,
    fmt,
    percentile,
    pipeline_site_toml,
    print_busiest_processes,
    start_simulators,
    stop_process,
    tree,
)
from bench.pipeline import SITE, measure_load, readings_in_history
from bench.poll import site_toml
from gridflex.broker import Broker, start_broker
from gridflex.mqtt import open_session
from gridflex.net import free_port

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
GRIDFLEX = [sys.executable, "-m", "gridflex.cli", "--log-level=ERROR"]


def per_1000(cpu_pct: float, n: int) -> float:
    """CPU per 1,000 assets, % of one core."""
    return cpu_pct * 1000 / n if n else 0.0


# --------------------------------------------------------------------------- collectors


def run_collectors(
    k: int, n: int, site: Path, tmp: Path, *, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    """K collector shards polling the site's N inverters; one row."""
    stats_files = [tmp / f"stats-{k}-{i}.json" for i in range(1, k + 1)]
    procs = [
        subprocess.Popen(
            [
                *GRIDFLEX,
                "collect",
                "modbus",
                "--site",
                str(site),
                "--shard",
                f"{i}/{k}",
                "--stats-file",
                str(stats_files[i - 1]),
                "--stats-warmup-s",
                str(warmup_s),
            ],
            cwd=ROOT,
            env=ENV,
        )
        for i in range(1, k + 1)
    ]
    try:
        ps = [psutil.Process(p.pid) for p in procs]
        time.sleep(warmup_s)
        cpu0, t0 = busy_s(ps), time.monotonic()
        time.sleep(duration_s)
        cpu1, t1 = busy_s(ps), time.monotonic()
    finally:
        codes = [stop_process(p) for p in procs]
    stats = [json.loads(f.read_text(encoding="utf-8")) if f.exists() else {} for f in stats_files]
    polls = sum(s.get("polls", 0) / s["elapsed_s"] for s in stats if s.get("elapsed_s"))
    p50s = [s["lateness_p50_ms"] for s in stats if s.get("lateness_p50_ms") is not None]
    p99s = [s["lateness_p99_ms"] for s in stats if s.get("lateness_p99_ms") is not None]
    cpu_pct = 100 * (cpu1 - cpu0) / (t1 - t0)
    return {
        "k": k,
        "assets_per_process": n / k,
        "polls_per_s": polls,
        "expected_per_s": n / INTERVAL_S,
        "missed": sum(s.get("missed", 0) for s in stats),
        "p50_ms": max(p50s, default=None),
        "p99_ms": max(p99s, default=None),
        "cpu_pct": cpu_pct,
        "per_1000": per_1000(cpu_pct, n),
        "exit": max(codes),
    }


def collector_rows(
    n: int, shards: list[int], broker: Broker, warmup_s: float, duration_s: float
) -> list[dict[str, Any]]:
    """One row per shard count, on one set of simulators."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="gridflex-bench-") as tmp_name:
        tmp = Path(tmp_name)
        sims: list[subprocess.Popen[bytes]] = []
        try:
            ports = start_simulators(n, sims)
            site = tmp / "site.toml"
            site.write_text(site_toml(n, ports, broker.url, 200), encoding="utf-8")
            # the simulators' first minute is slow (the first run of 1,000 inverters missed
            # thousands of polls at a quarter of a core; run second, none): one unmeasured run
            run_collectors(1, n, site, tmp, warmup_s=warmup_s, duration_s=1.0)
            for k in shards:
                row = run_collectors(k, n, site, tmp, warmup_s=warmup_s, duration_s=duration_s)
                rows.append(row)
                print(
                    f"{'collect':<8} {k:>3} {row['assets_per_process']:>9.0f} "
                    f"{row['polls_per_s']:>8.0f} {row['expected_per_s']:>8.0f} "
                    f"{row['missed']:>7} {fmt(row['p50_ms'], '.1f'):>7} "
                    f"{fmt(row['p99_ms'], '.1f'):>7} "
                    f"{row['cpu_pct']:>6.0f} {row['per_1000']:>8.1f} {row['exit']:>4}",
                    flush=True,
                )
        finally:
            for sim in sims:
                stop_process(sim)
    return rows


# --------------------------------------------------------------------------- pipeline


def start_cluster(url: str, site: Path, processes: int) -> list[subprocess.Popen[bytes]]:
    """Open every process's session in the shared group, then start the cluster."""
    client_id = f"gridflex-pipeline-{SITE}"
    telemetry = f"gridflex/v1/{SITE}/+/+/telemetry"
    addresses = ",".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    procs = []
    for i in range(processes):
        shared = f"$share/{client_id}/{telemetry}" if processes > 1 else telemetry
        open_session(url, f"{client_id}-{i}", shared)
        cluster = ["--addresses", addresses, "--process-id", str(i)] if processes > 1 else []
        procs.append(
            subprocess.Popen(
                [*GRIDFLEX, "pipeline", "--site", str(site), "--client-id", client_id, *cluster],
                cwd=ROOT,
                env=ENV,
            )
        )
    return procs


def stop_together(procs: list[subprocess.Popen[bytes]]) -> list[int]:
    """SIGTERM every process of the cluster, then wait: the dataflow ends when all have.

    Stopping them one after the other would wait for the first to finish a dataflow that
    the others still feed, and killing it then makes the others panic.
    """
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    return [stop_process(p, timeout_s=60) for p in procs]


def run_pipeline(
    processes: int, n: int, warmup_s: float, duration_s: float, drain_s: float
) -> dict[str, Any]:
    """A cluster of ``processes`` taking N inverters' telemetry; one row."""
    with tempfile.TemporaryDirectory(prefix="gridflex-bench-") as tmp, start_broker() as broker:
        data_dir = Path(tmp) / "history"
        site = Path(tmp) / "site.toml"
        site.write_text(pipeline_site_toml(SITE, broker.url, data_dir), encoding="utf-8")
        procs = start_cluster(broker.url, site, processes)
        try:
            time.sleep(5 + 2 * processes)  # imports, Bytewax start, the cluster's handshake
            trees = [tree(proc.pid) for proc in procs]
            load = measure_load(
                broker.url,
                n,
                [p for t in trees for p in t],
                warmup_s=warmup_s,
                duration_s=duration_s,
                drain_s=drain_s,
            )
        finally:
            codes = stop_together(procs)
        rows = readings_in_history(data_dir)
    cpu_pct, counts, delays = load.cpu_pct, load.counts, load.delays_ms
    each, by_process = iter(load.cpu_pct_each), []
    for t in trees:  # each process with its MQTT receiver
        by_process.append(sum(next(each) for _ in t))
    sent = counts.get("sent", 0)
    return {
        "p": processes,
        "assets_per_process": n / processes,
        "sent_per_s": sent / (warmup_s + duration_s),
        "history_per_s": rows / (warmup_s + duration_s),
        "in_history_pct": 100 * rows / sent if sent else None,
        "p50_ms": percentile(delays, 0.5),
        "p99_ms": percentile(delays, 0.99),
        "cpu_pct": cpu_pct,
        "per_1000": per_1000(cpu_pct, n),
        "cpu_by_process": by_process,
        "exit": max(codes),
    }


def pipeline_rows(
    n: int, sizes: list[int], warmup_s: float, duration_s: float, drain_s: float
) -> list[dict[str, Any]]:
    """One row per cluster size."""
    rows = []
    for p in sizes:
        row = run_pipeline(p, n, warmup_s, duration_s, drain_s)
        rows.append(row)
        print(
            f"{'pipeline':<8} {p:>3} {row['assets_per_process']:>9.0f} "
            f"{row['history_per_s']:>8.0f} {row['sent_per_s']:>8.0f} "
            f"{'-':>7} {fmt(row['p50_ms'], '.0f'):>7} {fmt(row['p99_ms'], '.0f'):>7} "
            f"{row['cpu_pct']:>6.0f} {row['per_1000']:>8.1f} {row['exit']:>4}"
            f"   history {fmt(row['in_history_pct'], '.2f')} %, CPU by process "
            + " + ".join(f"{c:.0f}" for c in row["cpu_by_process"]),
            flush=True,
        )
    return rows


# --------------------------------------------------------------------------- central


def central_rows(sites: list[int]) -> int:
    """The central level: ``bench/central.py`` with 3, 10, 30 simulated sites; its exit code.

    Its own table: the summary bytes per second going up against the raw telemetry they
    replace, and the allocation latency (issue 11 point 5).
    """
    argv = [sys.executable, str(ROOT / "bench" / "central.py")]
    for n in sites:
        argv += ["-n", str(n)]
    return subprocess.run(argv, cwd=ROOT, env=ENV, check=False).returncode


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=None, help="inverters (default 1000)")
    parser.add_argument(
        "--collectors", type=int, action="append", help="collector processes (1, 2, 4)"
    )
    parser.add_argument(
        "--pipelines", type=int, action="append", help="pipeline processes (1, 2; 0: none)"
    )
    parser.add_argument("--warmup-s", type=float, default=None, help="before measuring (10)")
    parser.add_argument("--duration-s", type=float, default=None, help="measured (20)")
    parser.add_argument("--drain-s", type=float, default=5.0, help="pipeline catch-up time")
    parser.add_argument("--quick", action="store_true", help="N = 200, 5 s + 10 s runs")
    parser.add_argument(
        "--central", action="store_true", help="the central level (3, 10, 30 sites)"
    )
    args = parser.parse_args()
    n = args.n or (200 if args.quick else 1000)
    warmup_s = args.warmup_s if args.warmup_s is not None else (5.0 if args.quick else 10.0)
    duration_s = args.duration_s if args.duration_s is not None else (10.0 if args.quick else 20.0)
    shards = [k for k in (args.collectors or [1, 2, 4]) if k > 0]
    clusters = [p for p in (args.pipelines or [1, 2]) if p > 0]
    print(
        f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, N = {n} "
        f"inverters every {INTERVAL_S * 1000:.0f} ms, {duration_s:.0f} s measured per run"
    )
    print_busiest_processes()
    header = (
        f"{'part':<8} {'procs':>3} {'assets/pr':>9} {'rate/s':>8} {'expected':>8} "
        f"{'missed':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU %':>6} {'%/1000':>8} {'exit':>4}"
    )
    if shards or clusters:
        print(header)
        print("-" * len(header))
    if shards:
        with start_broker("mosquitto") as broker:
            collector_rows(n, shards, broker, warmup_s, duration_s)
    if clusters:
        pipeline_rows(n, clusters, warmup_s, duration_s, args.drain_s)
    if args.central:
        return central_rows([3, 10, 30])
    return 0


if __name__ == "__main__":
    sys.exit(main())
