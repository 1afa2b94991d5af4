"""Benchmark: the closed loop, from a frequency step at the devices to their confirmed write.

Per N (``--assets 100,500,1000``) it starts, each in its own process: Mosquitto
(``gridflex.broker``), the SunSpec inverter simulator (``gridflex sim inverters``, one
process per 500 devices, 10 kW, replaying a frequency profile), a recorder
(``bench/closed_loop_recorder.py``), the writer (``gridflex control``), the pipeline
(``gridflex pipeline``, ``[dispatch] mode = "droop"``, its persistent session opened
first) and the Modbus collector
(``gridflex collect modbus``, every device every 200 ms), all on one site file.

The simulators hold 50.00 Hz for the lead time (start-up, discovery, the writer's first
connections: ``--warmup-s`` + N/25 s), then step every ``--step-s`` through 49.80, 50.00,
50.15, 50.00 Hz for ``--duration-s``. Each device measures the step itself (701 ``Hz``);
the collector reads it, the pipeline decides the droop setpoint per reading, the writer
writes 704 ``WSet``, reads it back and acks. The recorder republishes every
``--dup-every``-th command it sees ``--dup-copies`` times on the command topic (what a
broker redelivery or a replaying upstream does), and records the acks it receives.

After a drain the processes stop in data-flow order (collector, writer, pipeline: the
pipeline flushes its Parquet) and the bench reads the history back with DuckDB: the
``telemetry``, ``commands`` and ``acks`` views. The analysis is in
:mod:`bench.closed_loop_analysis` (pure; unit-tested).

Printed per N and variant (``central``: the pipeline decides, the writer writes;
``local droop``: ``--local-droop`` adds a run with ``[dispatch] local_droop = true``,
where the writer programs 711 and the devices respond on their own):

* write p50/p99: from the reading that showed the step to the confirmed write on the
  device: the ack's ``latency_from_telemetry_ms`` of the command that reading caused, and
  (cross-check) ``ack.ts_ms - reading.ts_ms``;
* all writes p50/p99: ``latency_from_telemetry_ms`` of every write in the measured time
  (keep-alives included);
* settle p50/p99: from the step (per simulator process: the earliest reading that showed
  it) to each device's first reading within 10 % of the change of its droop target;
* commands/s in the measured time; acks by result over the whole run; duplicates
  injected vs extra applications (an ack ``applied``/``clamped`` for a command id that
  was written before: must be 0);
* a second table: CPU % (100 = one core) and RSS of each process group over the measured
  time (psutil).

The bench reports; it asserts nothing. Target of issue 8: p99 under 100 ms from the
telemetry to the confirmed write at 1,000 assets on the 2-core machine.

    .venv/bin/python bench/closed_loop.py                         # 100, 500, 1000
    .venv/bin/python bench/closed_loop.py --assets 100,1000 --local-droop
    .venv/bin/python bench/closed_loop.py --assets 1000 --baseline
    .venv/bin/python bench/closed_loop.py --assets 1000 --pyspy-dir /tmp/spy

``--baseline`` also runs each N and variant with the writer on pymodbus' client (the
library baseline: ``python -m bench.baselines control --modbus pymodbus``, the same
``gridflex control`` with pymodbus injected) and prints the baseline's write p99 and writer
CPU as ratios of the command's.

``--pyspy-dir D`` records the writer (``gridflex control``) with py-spy (``$PYSPY``,
default ``.venv/bin/py-spy``) over the measured time, raw collapsed stacks; py-spy takes
CPU of its own, so such a run's latencies are not the benchmark's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench._harness import (
    ROOT,
    busiest_processes,
    busy_s,
    machine_busy_s,
    print_busiest_processes,
    pyspy_record,
    rss_mib,
    stop_process,
    tree,
)
from bench.closed_loop_analysis import (
    Ack,
    Reading,
    config_problem,
    droop_target_w,
    extra_applications,
    markdown_table,
    pair,
    profile_csv,
    profile_points,
    quantiles,
    results_count,
    settle_latencies,
    site_toml,
    step_levels,
    step_readings,
    step_times,
    write_latencies,
)
from bench.closed_loop_recorder import SITE, Recorded, recorder_main
from gridflex.broker import start_broker
from gridflex.history import connect
from gridflex.mqtt import open_session
from gridflex.net import free_port_block, wait_for_port
from pipelines.flow import pipeline_filters

PER_SIM_PROCESS = 500
PYSPY = os.environ.get("PYSPY", str(ROOT / ".venv" / "bin" / "py-spy"))


# --------------------------------------------------------------------------- processes


def _gridflex(
    *args: str, log_level: str = "WARNING", module: str = "gridflex.cli"
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module, f"--log-level={log_level}", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def start_simulators(
    n: int, profile: Path
) -> tuple[list[subprocess.Popen[bytes]], list[int], dict[str, int]]:
    """Simulator processes of ``PER_SIM_PROCESS`` devices; their ports and asset groups."""
    sims: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    group_of: dict[str, int] = {}
    for k in range(-(-n // PER_SIM_PROCESS)):
        count = min(PER_SIM_PROCESS, n - k * PER_SIM_PROCESS)
        base = free_port_block(count)
        for i in range(count):
            group_of[f"inv{len(ports) + i:05d}"] = k
        ports += range(base, base + count)
        sims.append(
            _gridflex(
                *("sim", "inverters", "--count", str(count), "--base-port", str(base)),
                *("--seed", str(k), "--frequency-profile", str(profile)),
                *("--max-power-w", "10000", "--capacity-wh", "60000"),
                log_level="ERROR",
            )
        )
        if not wait_for_port("127.0.0.1", base + count - 1, timeout_s=60):
            raise RuntimeError(f"simulator {k} did not start")
    return sims, ports, group_of


# --------------------------------------------------------------------------- one run


def _history(data_dir: Path) -> dict[str, Any]:
    con = connect(data_dir)
    try:
        readings = [
            Reading(*row)
            for row in con.execute(
                "select asset, ts_ms, seq, freq_hz, power_w from telemetry "
                "where freq_hz is not null"
            ).fetchall()
        ]
        acks = [
            Ack(*row)
            for row in con.execute(
                "select asset, command_id, result, ts_ms, seq, latency_from_telemetry_ms, "
                "latency_from_issued_ms from acks"
            ).fetchall()
        ]
        commands = [ts for (ts,) in con.execute("select ts_ms from commands").fetchall()]
    finally:
        con.close()
    return {"readings": readings, "acks": acks, "commands": commands}


def run_one(
    n: int, local_droop: bool, args: argparse.Namespace, *, pymodbus_writer: bool = False
) -> dict[str, Any]:
    """One N and variant: start everything, step, stop, read the history back.

    ``pymodbus_writer``: the writer is the library baseline (``bench.baselines control
    --modbus pymodbus``) instead of ``gridflex control``.
    """
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    results_in, results_out = ctx.Pipe(duplex=False)
    steps = max(1, round(args.duration_s / args.step_s))
    lead_s = args.warmup_s + n / 25
    procs: dict[str, subprocess.Popen[bytes]] = {}
    sims: list[subprocess.Popen[bytes]] = []
    spy = None
    with (
        tempfile.TemporaryDirectory(prefix="gridflex-closed-loop-") as tmp,
        start_broker() as broker,
    ):
        data_dir = Path(tmp) / "history"
        profile = Path(tmp) / "frequency.csv"
        profile.write_text(profile_csv(profile_points(lead_s, args.step_s, steps)), "utf-8")
        try:
            t_sim = time.monotonic()
            sims, ports, group_of = start_simulators(n, profile)
            site = Path(tmp) / "site.toml"
            text = site_toml(
                site=SITE,
                mqtt_url=broker.url,
                data_dir=data_dir,
                ports=ports,
                poll_ms=args.poll_ms,
                local_droop=local_droop,
            )
            site.write_text(text, encoding="utf-8")
            recorder = ctx.Process(
                target=recorder_main,
                args=(broker.url, (args.dup_every, args.dup_copies), ready, stop, results_out),
                daemon=True,
            )
            recorder.start()
            if not ready.wait(30):
                raise RuntimeError("recorder did not start")
            if pymodbus_writer:
                procs["control"] = _gridflex(
                    *("control", "--site", str(site), "--no-api", "--modbus", "pymodbus"),
                    module="bench.baselines",
                )
            else:
                procs["control"] = _gridflex("control", "--site", str(site), "--no-api")
            client_id = f"gridflex-pipeline-{SITE}"
            for topic_filter in pipeline_filters(SITE):
                open_session(broker.url, f"{client_id}-0", topic_filter)
            procs["pipeline"] = _gridflex("pipeline", "--site", str(site), "--client-id", client_id)
            procs["collector"] = _gridflex("collect", "modbus", "--site", str(site))
            step_at = t_sim + lead_s
            wait_s = step_at - time.monotonic()
            if wait_s < 0:
                print(f"  warning: start-up took {-wait_s:.0f} s past the first step", flush=True)
            time.sleep(max(0.0, wait_s))
            groups = {
                "simulators": [psutil.Process(p.pid) for p in sims],
                "collector": [psutil.Process(procs["collector"].pid)],
                "pipeline": tree(procs["pipeline"].pid),
                "control": [psutil.Process(procs["control"].pid)],
                "mosquitto": [psutil.Process(broker.pid)] if broker.pid else [],
                "recorder": [psutil.Process(recorder.pid)] if recorder.pid else [],
            }
            if args.pyspy_dir is not None:
                args.pyspy_dir.mkdir(parents=True, exist_ok=True)
                variant = "local" if local_droop else "central"
                out = args.pyspy_dir / f"control-{variant}-{n}.txt"
                spy = pyspy_record(PYSPY, procs["control"].pid, out, steps * args.step_s)
            cpu0 = {k: busy_s(v) for k, v in groups.items()}
            machine0, t0 = machine_busy_s(), time.monotonic()
            time.sleep(steps * args.step_s / 2)
            busiest = busiest_processes(1.0, top=8)  # who else shares the cores
            time.sleep(max(0.0, t0 + steps * args.step_s - time.monotonic()))
            cpu1 = {k: busy_s(v) for k, v in groups.items()}
            machine1, t1 = machine_busy_s(), time.monotonic()
            rss = {k: rss_mib(v) for k, v in groups.items()}
            time.sleep(args.drain_s)
        finally:
            if spy is not None:
                stop_process(spy, timeout_s=30)
            exits = {}
            for name, pause_s in (("collector", 2.0), ("control", 2.0), ("pipeline", 0.0)):
                if name in procs:
                    exits[name] = stop_process(procs[name], timeout_s=60)
                    time.sleep(pause_s)
            stop.set()
            for sim in sims:
                stop_process(sim)
        recorded: Recorded | None = results_in.recv() if results_in.poll(60) else None
        history = _history(data_dir)
    elapsed_s = t1 - t0
    return analyse(
        n=n,
        local_droop=local_droop,
        pymodbus_writer=pymodbus_writer,
        steps=steps,
        history=history,
        group_of=group_of,
        recorded=recorded,
        cpu={k: 100 * (cpu1[k] - cpu0[k]) / elapsed_s for k in cpu0},
        other_pct=100 * (machine1 - machine0) / elapsed_s
        - sum(100 * (cpu1[k] - cpu0[k]) / elapsed_s for k in cpu0),
        rss=rss,
        exits=exits,
        busiest=busiest,
    )


def analyse(
    *,
    n: int,
    local_droop: bool,
    pymodbus_writer: bool = False,
    steps: int,
    history: dict[str, Any],
    group_of: dict[str, int],
    recorded: Recorded | None,
    cpu: dict[str, float],
    other_pct: float,
    rss: dict[str, float],
    exits: dict[str, int],
    busiest: list[tuple[float, str]],
) -> dict[str, Any]:
    """Turn the history of one run into the table's numbers."""
    readings: list[Reading] = history["readings"]
    acks: list[Ack] = history["acks"]
    seen = step_readings(readings)
    times = step_times(seen, group_of)
    targets = [droop_target_w(f) for f in step_levels(steps)]
    writes = write_latencies(seen, acks)
    settled, never = settle_latencies(readings, seen, times, group_of, targets)
    first_ms = min(times.values(), default=0)
    groups = {g for g, _k in times}
    # The measured time: from the first step to the end of the last step's period.
    last = [times[(g, k)] for g, k in times if k == steps - 1]
    window_ms = (max(last) - first_ms) if last else 0
    window_ms += window_ms // max(1, steps - 1) if steps > 1 else 0
    until_ms = first_ms + window_ms
    in_window = [
        float(a.latency_from_telemetry_ms)
        for a in acks
        if a.latency_from_telemetry_ms is not None and first_ms <= a.ts_ms < until_ms
    ]
    commands = sum(1 for ts in history["commands"] if first_ms <= ts < until_ms)
    ready = {a.asset for a in acks if a.result in ("applied", "clamped") and a.ts_ms < first_ms}
    return {
        "n": n,
        "variant": ("local droop" if local_droop else "central")
        + (PYMODBUS_WRITER if pymodbus_writer else ""),
        "steps_seen": sum(len(s) for s in seen.values()),
        "steps_expected": n * steps,
        "groups": len(groups),
        "write": quantiles(writes.reported),
        "write_check": quantiles(writes.measured),
        "write_pipeline": quantiles(writes.pipeline),
        "write_writer": quantiles(writes.writer),
        "write_max": max(writes.reported, default=None),
        "unacked": writes.missing,
        "all_writes": quantiles(in_window),
        "settle": quantiles(settled),
        "never": never,
        "commands_per_s": commands / (window_ms / 1000) if window_ms else None,
        "history_commands": len(history["commands"]),
        "acks": results_count(acks),
        "recorded": recorded,
        "extra": extra_applications(acks),
        "ready": len(ready),
        "cpu": cpu,
        "other_pct": other_pct,
        "rss": rss,
        "exits": exits,
        "busiest": busiest,
    }


# --------------------------------------------------------------------------- table

#: Suffix of a variant whose writer is the pymodbus baseline.
PYMODBUS_WRITER = ", pymodbus writer"

PROCESS_GROUPS = ("simulators", "collector", "pipeline", "control", "mosquitto", "recorder")


def latency_table(results: list[dict[str, Any]]) -> str:
    """The main table: latencies, rates, acks, duplicates."""
    header = [
        "N",
        "variant",
        "write p50 / p99 ms",
        "check ack-reading p50 / p99 ms",
        "of it: to issue / writer p99 ms",
        "all writes p50 / p99 ms",
        "settle ±10 % p50 / p99 ms",
        "commands/s",
        "acks by result (received)",
        "duplicates injected",
        "extra applications (received / history)",
    ]
    rows = []
    for r in results:
        rec: Recorded | None = r["recorded"]
        rows.append(
            [
                str(r["n"]),
                r["variant"],
                pair(r["write"]),
                pair(r["write_check"]),
                f"{pair(r['write_pipeline'][1:], '.0f')} / {pair(r['write_writer'][1:], '.0f')}",
                pair(r["all_writes"]),
                pair(r["settle"], ".0f"),
                "-" if r["commands_per_s"] is None else f"{r['commands_per_s']:.0f}",
                "-" if rec is None else " ".join(f"{k} {v}" for k, v in _by_count(rec.acks)),
                "-" if rec is None else str(rec.injected),
                f"{'-' if rec is None else rec.extra} / {r['extra']}",
            ]
        )
    return markdown_table(header, rows, right={0, 2, 3, 4, 5, 6, 7, 9, 10})


def _by_count(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def resource_table(results: list[dict[str, Any]]) -> str:
    """CPU % and RSS MiB per process group, one row per run."""
    header = ["N", "variant", *(f"{g} CPU % / RSS MiB" for g in PROCESS_GROUPS), "other CPU %"]
    rows = [
        [
            str(r["n"]),
            r["variant"],
            *(f"{r['cpu'].get(g, 0):.0f} / {r['rss'].get(g, 0):.0f}" for g in PROCESS_GROUPS),
            f"{r['other_pct']:.0f}",
        ]
        for r in results
    ]
    return markdown_table(header, rows, right=set(range(2, len(header))))


def notes(r: dict[str, Any]) -> str:
    """What the table does not show: coverage of the steps, readiness, exit codes."""
    rec: Recorded | None = r["recorded"]
    stored = " ".join(f"{k} {v}" for k, v in r["acks"].items())
    return (
        f"N={r['n']} {r['variant']}: steps seen {r['steps_seen']}/{r['steps_expected']} "
        f"(simulator processes {r['groups']}); assets acked before the first step "
        f"{r['ready']}/{r['n']}; step readings without a write ack {r['unacked']}; "
        f"never within 10 % {r['never']}; write max {r['write_max']} ms; commands in "
        f"history {r['history_commands']}, first sight at the recorder "
        f"{'-' if rec is None else rec.commands}; acks in history: {stored} (copies acked "
        f"within the same ms are one row); "
        f"exit codes {r['exits']}; busiest processes mid-run (CPU %): "
        + "; ".join(f"{pct:.0f} {proc}" for pct, proc in r["busiest"])
    )


def baseline_ratios(results: list[dict[str, Any]]) -> list[str]:
    """The pymodbus writer's write p99 and writer CPU as ratios of the command's."""
    ours = {(r["n"], r["variant"]): r for r in results}
    lines = []
    for r in results:
        if not r["variant"].endswith(PYMODBUS_WRITER):
            continue
        command = ours.get((r["n"], r["variant"].removesuffix(PYMODBUS_WRITER)))
        if command is None:
            continue
        p99, base_p99 = command["write"][1], r["write"][1]
        cpu, base_cpu = command["cpu"].get("control", 0.0), r["cpu"].get("control", 0.0)
        p99_ratio = f"{base_p99 / p99:.2f} x" if p99 and base_p99 is not None else "-"
        cpu_ratio = f"{base_cpu / cpu:.2f} x" if cpu else "-"
        lines.append(
            f"N={r['n']} {r['variant']}: write p99 {base_p99} ms = {p99_ratio} the command's "
            f"({p99} ms); writer CPU {base_cpu:.0f} % = {cpu_ratio} the command's ({cpu:.0f} %)"
        )
    return lines


def _assets(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N,N,..., got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
    return sizes


def main() -> int:
    """Run the benchmark; print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=_assets, default=[100, 500, 1000], help="N,N,...")
    parser.add_argument("--duration-s", type=float, default=32.0, help="measured time per run")
    parser.add_argument("--step-s", type=float, default=8.0, help="time between two steps")
    parser.add_argument(
        "--warmup-s", type=float, default=20.0, help="lead before the first step (+ N/25 s)"
    )
    parser.add_argument("--drain-s", type=float, default=3.0, help="time to catch up after")
    parser.add_argument("--poll-ms", type=int, default=200, help="collector poll interval")
    parser.add_argument(
        "--dup-every", type=int, default=10, help="republish every K-th command (0: none)"
    )
    parser.add_argument("--dup-copies", type=int, default=3, help="copies per republished one")
    parser.add_argument(
        "--local-droop",
        action="store_true",
        help="also run each N with [dispatch] local_droop = true",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run each N and variant with the writer on pymodbus (bench.baselines)",
    )
    parser.add_argument("--pyspy-dir", type=Path, help="py-spy the writer into this folder")
    args = parser.parse_args()

    variants = [False]
    if args.local_droop:
        problem = config_problem(
            site_toml(
                site=SITE,
                mqtt_url="mqtt://127.0.0.1:1",
                data_dir=Path("x"),
                ports=[502],
                local_droop=True,
            )
        )
        if problem is None:
            variants.append(True)
        else:
            print(
                "local droop: NOT RUN: this checkout's site config does not know "
                f"[dispatch] local_droop yet ({problem})",
                flush=True,
            )
    print(
        f"machine: {os.cpu_count()} cores, load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
        + f", python {sys.version.split()[0]}; polls every {args.poll_ms} ms, a step every "
        f"{args.step_s:g} s for {args.duration_s:g} s, duplicates: every "
        f"{args.dup_every or '-'}th command x {args.dup_copies}"
    )
    print_busiest_processes()
    results = []
    for n in args.assets:
        for local in variants:
            print(f"running N={n} {'local droop' if local else 'central'} ...", flush=True)
            results.append(run_one(n, local, args))
            if args.baseline:
                print(f"running N={n} the same with the pymodbus writer ...", flush=True)
                results.append(run_one(n, local, args, pymodbus_writer=True))
    print()
    print(latency_table(results))
    print()
    print(resource_table(results))
    print()
    for r in results:
        print(notes(r))
    ratios = baseline_ratios(results)
    if ratios:
        print()
        print("the pymodbus baseline against the command:")
        print("\n".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
