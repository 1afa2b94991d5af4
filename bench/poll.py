"""Benchmark: one Modbus collector polling N simulated SunSpec inverters every 200 ms.

Starts Mosquitto (``gridflex.broker``), the inverter simulator in one or more processes,
and ONE ``gridflex collect modbus`` process; lets it warm up (connect + discover), then
measures for ``--duration-s`` and prints one row per run: achieved and expected polls/s,
missed polls, p50/p99 lateness against the schedule (from the collector's own
``--stats-file``), and the collector's CPU % and RSS (psutil).

Each run is one N with one client variant ``MODBUS/MQTT``: ``lean/asyncio`` is the
command (``gridflex collect modbus``, its only clients); the others are the library
baselines, the same collector with pymodbus' Modbus client and/or paho's MQTT client
injected (``python -m bench.baselines collect-modbus --modbus M --mqtt Q``). By default
every N runs ``lean/asyncio`` and N = 1000 also runs ``pymodbus/paho`` (the collector
before issue 2) and the two mixed variants, then prints each baseline's CPU per poll as a
ratio of the command's, so the table shows what each change buys.

    .venv/bin/python bench/poll.py                 # N = 100, 500, 1000, 2000, 20 s each
    .venv/bin/python bench/poll.py -n 1000 --duration-s 60 --compare-n 0
    .venv/bin/python bench/poll.py -n 1000 --variant pymodbus/asyncio --compare-n 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench._harness import (
    busy_s,
    fmt,
    machine_busy_s,
    print_busiest_processes,
    start_simulators,
    stop_process,
)
from gridflex.broker import Broker, start_broker

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INTERVAL_MS = 200


def site_toml(n: int, ports: list[int], mqtt_url: str, interval_ms: int) -> str:
    lines = [
        '[site]\nid = "bench"\n',
        f'[mqtt]\nurl = "{mqtt_url}"\nqueue_limit = 1000000\n',
        f"[modbus]\npoll_interval_ms = {interval_ms}\ntimeout_s = 1.0\n"
        "backoff_initial_s = 1.0\nbackoff_max_s = 10.0\n",
    ]
    for i in range(n):
        lines.append(
            f'[[assets]]\nid = "inv{i:05d}"\nkind = "inverter"\nhost = "127.0.0.1"\n'
            f"port = {ports[i]}\nmax_charge_w = 11000\nmax_discharge_w = 11000\n"
        )
    return "\n".join(lines)


COMMAND = "lean/asyncio"
VARIANTS = (COMMAND, "pymodbus/paho", "pymodbus/asyncio", "lean/paho")


def collector_argv(python: str, variant: str) -> list[str]:
    """The collector process: the command, or the baseline with the variant's clients."""
    if variant == COMMAND:
        return [python, "-m", "gridflex.cli", "--log-level=ERROR", "collect", "modbus"]
    modbus_client, mqtt_client = variant.split("/")
    baseline = [python, "-m", "bench.baselines", "--log-level=ERROR", "collect-modbus"]
    return [*baseline, "--modbus", modbus_client, "--mqtt", mqtt_client]


def cpu_per_poll_ms(row: dict) -> float | None:
    """The collector's CPU time per poll, ms (None without polls)."""
    if not row["polls_per_s"]:
        return None
    return 10 * row["cpu_pct"] / row["polls_per_s"]


@dataclass(frozen=True)
class Case:
    n: int
    sim_procs: int
    warmup_s: float
    duration_s: float
    interval_ms: int
    variant: str = COMMAND


def run_one(case: Case, broker: Broker) -> dict:
    n, sim_procs, warmup_s, duration_s = case.n, case.sim_procs, case.warmup_s, case.duration_s
    broker_pid, mqtt_url = broker.pid, broker.url
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    python = sys.executable
    per_proc = -(-n // sim_procs)
    sims: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="gridflex-bench-") as tmp:
        try:
            ports = start_simulators(n, sims, per_proc=per_proc)
            site = Path(tmp) / "site.toml"
            site.write_text(site_toml(n, ports, mqtt_url, case.interval_ms), encoding="utf-8")
            stats_file = Path(tmp) / "stats.json"
            collector = subprocess.Popen(
                [
                    *collector_argv(python, case.variant),
                    "--site",
                    str(site),
                    "--stats-file",
                    str(stats_file),
                    "--stats-warmup-s",
                    str(warmup_s),
                ],
                cwd=ROOT,
                env=env,
            )
            proc = psutil.Process(collector.pid)
            ours = [psutil.Process(p.pid) for p in sims]
            if broker_pid is not None:
                ours.append(psutil.Process(broker_pid))
            time.sleep(warmup_s)
            cpu0, t0 = proc.cpu_times(), time.monotonic()
            ours0, machine0 = busy_s(ours), machine_busy_s()
            time.sleep(duration_s)
            cpu1, t1 = proc.cpu_times(), time.monotonic()
            ours1, machine1 = busy_s(ours), machine_busy_s()
            rss_mib = proc.memory_info().rss / 2**20
            rc = stop_process(collector)
            stats = (
                json.loads(stats_file.read_text(encoding="utf-8")) if stats_file.exists() else {}
            )
        finally:
            for sim in sims:
                stop_process(sim)
    cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    rest_s = ours1 - ours0
    other_s = max(0.0, (machine1 - machine0) - cpu_s - rest_s)
    elapsed = float(stats.get("elapsed_s") or (t1 - t0))
    return {
        "n": n,
        "variant": case.variant,
        "polls_per_s": (stats.get("polls", 0) / elapsed) if elapsed else 0.0,
        "expected_per_s": n * 1000 / case.interval_ms,
        "missed": stats.get("missed"),
        "p50_ms": stats.get("lateness_p50_ms"),
        "p99_ms": stats.get("lateness_p99_ms"),
        "max_ms": stats.get("lateness_max_ms"),
        "failures": stats.get("failures"),
        "cpu_pct": 100 * cpu_s / (t1 - t0),
        "rest_pct": 100 * rest_s / (t1 - t0),
        "other_pct": 100 * other_s / (t1 - t0),
        "rss_mib": rss_mib,
        "exit": rc,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, action="append", help="fleet size (repeatable)")
    parser.add_argument(
        "--variant",
        action="append",
        choices=VARIANTS,
        help="MODBUS/MQTT client variant for every N (repeatable; default lean/asyncio, "
        "the command; the others run bench.baselines)",
    )
    parser.add_argument(
        "--compare-n",
        type=int,
        default=1000,
        help="also run every other variant at this N (default 1000; 0: none)",
    )
    parser.add_argument(
        "--interval-ms", type=int, default=DEFAULT_INTERVAL_MS, help="poll interval (200)"
    )
    parser.add_argument("--duration-s", type=float, default=20.0, help="measured time per N")
    parser.add_argument(
        "--warmup-s", type=float, default=None, help="connect/discover time (5 s + N/200 s)"
    )
    parser.add_argument(
        "--sim-procs", type=int, default=None, help="simulator processes (default 1 per 500)"
    )
    args = parser.parse_args()
    sizes = args.n or [100, 500, 1000, 2000]
    variants = args.variant or [COMMAND]
    runs = [(n, v) for n in sizes for v in variants]
    if args.compare_n:
        runs += [(args.compare_n, v) for v in VARIANTS if (args.compare_n, v) not in runs]
    print(
        f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, "
        f"poll every {args.interval_ms} ms, {args.duration_s:.0f} s measured per run"
    )
    print_busiest_processes()
    header = (
        f"{'N':>5} {'client':<16} {'polls/s':>8} {'expected':>8} {'missed':>7} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'fail':>5} {'CPU %':>6} {'RSS MiB':>8} {'exit':>4} "
        f"{'sim+mqtt %':>10} {'other %':>7}"
    )
    print(header)
    print("-" * len(header))
    rows: list[dict] = []
    with start_broker("mosquitto") as broker:
        for n, variant in runs:
            procs = args.sim_procs or max(1, min(4, -(-n // 500)))
            warmup_s = args.warmup_s if args.warmup_s is not None else 5 + n / 200
            case = Case(n, procs, warmup_s, args.duration_s, args.interval_ms, variant)
            r = run_one(case, broker)
            rows.append(r)
            print(
                f"{r['n']:>5} {r['variant']:<16} {r['polls_per_s']:>8.0f} "
                f"{r['expected_per_s']:>8.0f} "
                f"{fmt(r['missed'], 'd'):>7} {fmt(r['p50_ms'], '.1f'):>7} "
                f"{fmt(r['p99_ms'], '.1f'):>7} {fmt(r['max_ms'], '.1f'):>7} "
                f"{fmt(r['failures'], 'd'):>5} {r['cpu_pct']:>6.0f} {r['rss_mib']:>8.0f} "
                f"{r['exit']:>4} {r['rest_pct']:>10.0f} {r['other_pct']:>7.0f}",
                flush=True,
            )
    print_ratios(rows)
    return 0


def print_ratios(rows: list[dict]) -> None:
    """Each baseline's CPU per poll against the command's at the same N."""
    command = {r["n"]: cpu_per_poll_ms(r) for r in rows if r["variant"] == COMMAND}
    lines = []
    for r in rows:
        ours, theirs = command.get(r["n"]), cpu_per_poll_ms(r)
        if r["variant"] == COMMAND or not ours or theirs is None:
            continue
        lines.append(
            f"  N = {r['n']}: {r['variant']:<16} {theirs * 1000:6.0f} us CPU per poll, "
            f"{theirs / ours:4.2f} x {COMMAND} ({ours * 1000:.0f} us)"
        )
    if lines:
        print("baselines against the command (collector CPU per poll):")
        print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
