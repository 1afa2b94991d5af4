"""Benchmark: dispatch in stream, from an inverter's reading to its command at a subscriber.

Starts Mosquitto (``gridflex.broker``), a QoS 1 subscriber on
``gridflex/v1/bench/dispatch/+/command`` (and the retained summary) in its own process
(the native ``gridflex.mqtt_asyncio`` client), opens the pipeline's persistent session and
starts ONE ``gridflex pipeline`` process with a site file of N inverters (10 kW charge and
discharge, 60 kWh) and ``[dispatch] mode = fcr|droop``. From this process it sends
``telemetry/1`` for the N inverters every 200 ms (``bench._harness.publish_telemetry``:
QoS 1, ``ts_ms`` = wall clock at publish, ``soc_pct`` 50 so the envelope allows discharge,
``setpoint_w`` 0) for ``--warmup-s`` + ``--duration-s``, the frequency stepping every
``--step-s`` through 50.00, 49.80, 50.00, 50.15, 50.00, 49.90, 50.00, 50.05 Hz (+ 2 mHz
noise), so every step moves every setpoint beyond ``min_step_w`` (fcr dead band 10 mHz,
droop 36 mHz). Then it gives the pipeline ``--drain-s``, stops it (SIGTERM: it flushes its
Parquet files), stops the subscriber and reads the history back with DuckDB
(``gridflex.history.connect``).

Latency of a command = its arrival at the subscriber - ``ts_ms`` of the reading that caused
it (= from the reading's publish to the command's arrival), over the commands whose reading
was published in the measured window. "in" (``issued_ms - ts_ms``: publisher, Mosquitto,
the pipeline's receiver process, up to the dataflow's input) and "out" (arrival -
``issued_ms``: the dataflow's steps, its MQTT sink, Mosquitto, the subscriber) split it.

Nothing lost: the command ids in the ``commands`` history view (de-duplicated on
``command_id``) vs those the subscriber received, for the measured window; the readings in
the ``telemetry`` view (de-duplicated) vs those published.

    .venv/bin/python bench/dispatch.py                       # N = 500, 1000, 2000; fcr
    .venv/bin/python bench/dispatch.py -n 1000 --mode droop --duration-s 60
    .venv/bin/python bench/dispatch.py -n 1000 --samples-file /tmp/s.csv --pyspy-dir /tmp/spy

Diagnostics: ``--samples-file F.csv`` writes every command received (arrival ms, reading
``ts_ms``, ``issued_ms``, command id; per N ``F-{N}.csv`` when several N run) and, next to
it, ``F-events.csv``: the pipeline's Parquet files (written ms, stream, bytes) and its
garbage collections of generation 2 or longer than 5 ms (end ms, duration ms, generation,
collected, pid) and, every 8th full collection, the most common object types the collector
tracks, logged by a ``sitecustomize`` put on the pipeline's ``PYTHONPATH`` (the type count
is a pause of its own);
``--pyspy-dir D`` records the pipeline process (all threads, idle included) with py-spy
(``$PYSPY``, default ``.venv/bin/py-spy``) over the measured window, in py-spy's raw
(collapsed stack) format. py-spy takes CPU of its own: such a run's latencies are not the
benchmark's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import psutil

from bench._harness import (
    INTERVAL_S,
    ROOT,
    asset_id,
    busy_s,
    fmt,
    machine_busy_s,
    percentile,
    pipeline_site_toml,
    print_busiest_processes,
    publish_telemetry,
    pyspy_record,
    rss_mib,
    start_pipeline,
    stop_process,
    tree,
)
from gridflex.broker import start_broker
from gridflex.contract import command_topic, summary_topic
from gridflex.history import connect
from gridflex.mqtt_asyncio import AsyncMqttClient

SITE = "bench"
COMMAND_FILTER = f"gridflex/v1/{SITE}/dispatch/+/command"
#: Grid frequency the fleet reports, one value per ``--step-s``, round and round.
STEPS_HZ = (50.00, 49.80, 50.00, 50.15, 50.00, 49.90, 50.00, 50.05)
NOISE_HZ = 0.002
RATING_W = 10_000
CAPACITY_WH = 60_000
FCR_SHARE = 0.4  # FCR capacity: 40 % of the fleet's discharge rating
PROBE = b"bench-probe"
PYSPY = os.environ.get("PYSPY", str(ROOT / ".venv" / "bin" / "py-spy"))


def stepped_frequency(
    step_s: float, noise_hz: float = NOISE_HZ, seed: int = 3
) -> Callable[[float], float]:
    """Frequency at ``elapsed_s``: ``STEPS_HZ`` in turn, ``step_s`` each, + Gaussian noise."""
    rng = random.Random(seed)

    def freq_hz(elapsed_s: float) -> float:
        step = STEPS_HZ[int(elapsed_s // step_s) % len(STEPS_HZ)]
        return round(step + (rng.gauss(0, noise_hz) if noise_hz else 0.0), 4)

    return freq_hz


def dispatch_site_toml(
    mqtt_url: str, data_dir: Path, n: int, mode: str, snapshot_s: float = 5.0
) -> str:
    """The bench site: ``[dispatch]``, N inverters, recovery on (the production setting).

    ``snapshot_s`` 0 turns recovery off (to see what the snapshots cost).
    """
    fcr_capacity_w = FCR_SHARE * n * RATING_W
    recovery = (
        f"recovery = true\nsnapshot_interval_s = {snapshot_s}"
        if snapshot_s > 0
        else "recovery = false"
    )
    parts = [
        pipeline_site_toml(SITE, mqtt_url, data_dir),
        f"\n[pipeline]\n{recovery}\n",
        f'\n[dispatch]\nmode = "{mode}"\nmin_step_w = 100\nrefresh_s = 5\n',
        f"\n[dispatch.fcr]\ncapacity_w = {fcr_capacity_w:.0f}\n",
    ]
    parts.extend(
        f'\n[[assets]]\nid = "{asset_id(i)}"\nkind = "inverter"\nhost = "127.0.0.1"\n'
        f"port = {1502 + i}\nmax_charge_w = {RATING_W}\nmax_discharge_w = {RATING_W}\n"
        f"capacity_wh = {CAPACITY_WH}\n"
        for i in range(n)
    )
    return "".join(parts)


# --------------------------------------------------------------------------- subscriber


@dataclass(frozen=True, slots=True)
class Received:
    """One command as the subscriber got it (times in UTC epoch ms)."""

    arrived_ms: float
    ts_ms: int
    issued_ms: int
    command_id: str


async def _subscribe(url: str, ready: Event, stop: Event, out: Connection) -> None:
    raw: list[tuple[int, bytes]] = []
    summaries: list[bytes] = []
    probed = asyncio.Event()

    def on_command(_topic: str, payload: bytes) -> None:
        raw.append((time.time_ns(), payload))  # parsed after the run: keep this cheap
        if payload == PROBE:
            probed.set()

    client = AsyncMqttClient(url, f"bench-dispatch-sub-{os.getpid()}", clean_session=True)
    client.subscribe(COMMAND_FILTER, on_command)
    client.subscribe(summary_topic(SITE), lambda _t, payload: summaries.append(payload))
    await client.start()
    if not await client.wait_connected(10):
        raise RuntimeError(f"subscriber: no broker at {url}")
    # a round trip through the broker: the subscription is in place
    client.publish(command_topic(SITE, "probe"), PROBE)
    await asyncio.wait_for(probed.wait(), 10)
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    await client.stop()
    commands = []
    for arrived_ns, payload in raw:
        if payload == PROBE:
            continue
        c = json.loads(payload)
        commands.append(Received(arrived_ns / 1e6, c["ts_ms"], c["issued_ms"], c["command_id"]))
    out.send((commands, [json.loads(s) for s in summaries]))


def subscriber_main(url: str, ready: Event, stop: Event, out: Connection) -> None:
    """Entry of the subscriber process: record every command until ``stop`` is set."""
    asyncio.run(_subscribe(url, ready, stop, out))


# --------------------------------------------------------------------------- one run


def first_arrivals(commands: list[Received]) -> dict[str, Received]:
    """Each command id's first arrival (QoS 1 may deliver one twice)."""
    first: dict[str, Received] = {}
    for c in commands:
        if c.command_id not in first or c.arrived_ms < first[c.command_id].arrived_ms:
            first[c.command_id] = c
    return first


GC_LOG_ENV = "GRIDFLEX_BENCH_GC_LOG"
#: Imported at start-up by every Python process of the pipeline (``site`` imports it).
GC_LOGGER = f"""
import gc, os, time
_dir = os.environ.get("{GC_LOG_ENV}")
if _dir:
    _out = open(os.path.join(_dir, f"gc-{{os.getpid()}}.csv"), "a", buffering=1)
    _start = [0]
    def _log(phase, info):
        if phase == "start":
            _start[0] = time.perf_counter_ns()
            return
        ms = (time.perf_counter_ns() - _start[0]) / 1e6
        if info["generation"] == 2 or ms > 5:
            _out.write(f"{{time.time_ns() / 1e6:.1f}},{{ms:.2f}},{{info['generation']}},"
                       f"{{info['collected']}},{{os.getpid()}}\\n")
        if info["generation"] == 2:
            _full[0] += 1
            if _full[0] % 8 == 0:  # what the collector walks: the most common tracked types
                counts = {{}}
                for obj in gc.get_objects():
                    name = type(obj).__name__
                    counts[name] = counts.get(name, 0) + 1
                top = sorted(counts.items(), key=lambda kv: -kv[1])[:6]
                _out.write(f"{{time.time_ns() / 1e6:.1f}},tracked {{sum(counts.values())}}: "
                           + " ".join(f"{{k}}={{v}}" for k, v in top) + "\\n")
    _full = [0]
    gc.callbacks.append(_log)
"""


def write_events(path: Path, data_dir: Path, gc_dir: Path) -> None:
    """The pipeline's Parquet files (mtime) and logged garbage collections, in time order."""
    events = [
        (f.stat().st_mtime_ns / 1e6, f"parquet,{f.parts[-3]},{f.stat().st_size}")
        for f in data_dir.glob("*/date=*/part-*.parquet")
    ]
    for log_file in gc_dir.glob("gc-*.csv"):
        for line in log_file.read_text(encoding="utf-8").splitlines():
            end_ms, rest = line.split(",", 1)
            events.append((float(end_ms), f"gc,{rest}"))
    with path.open("w", encoding="utf-8") as out:
        out.write("ms,event,detail...\n")
        for ms, text in sorted(events):
            out.write(f"{ms:.1f},{text}\n")


def write_samples(path: Path, commands: list[Received]) -> None:
    """Every command received, in arrival order: arrival, reading and issue times, id."""
    with path.open("w", encoding="utf-8") as out:
        out.write("arrived_ms,ts_ms,issued_ms,command_id\n")
        for c in sorted(commands, key=lambda c: c.arrived_ms):
            out.write(f"{c.arrived_ms:.3f},{c.ts_ms},{c.issued_ms},{c.command_id}\n")


def run_one(n: int, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    results_in, results_out = ctx.Pipe(duplex=False)
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="gridflex-bench-") as tmp, start_broker() as broker:
        data_dir = Path(tmp) / "history"
        site = Path(tmp) / "site.toml"
        site.write_text(
            dispatch_site_toml(broker.url, data_dir, n, mode, args.snapshot_s), encoding="utf-8"
        )
        subscriber = ctx.Process(
            target=subscriber_main, args=(broker.url, ready, stop, results_out), daemon=True
        )
        subscriber.start()
        if not ready.wait(30):
            raise RuntimeError("subscriber did not start")
        gc_dir = Path(tmp) / "gc"
        gc_dir.mkdir()
        if args.samples_file is not None:
            (gc_dir / "sitecustomize.py").write_text(GC_LOGGER, encoding="utf-8")
        pipeline = start_pipeline(
            broker.url, SITE, site, pythonpath=[gc_dir], env={GC_LOG_ENV: str(gc_dir)}
        )
        spy = None
        try:
            time.sleep(5)  # imports, Bytewax start, receiver connected
            groups = {
                "pipeline": tree(pipeline.pid),
                "mosquitto": [psutil.Process(broker.pid)],
                "subscriber": [psutil.Process(subscriber.pid)],
                "bench": [psutil.Process()],  # the publisher
            }
            publisher = threading.Thread(
                target=lambda: counts.update(
                    asyncio.run(
                        publish_telemetry(
                            broker.url,
                            SITE,
                            n,
                            args.warmup_s + args.duration_s,
                            freq_hz=stepped_frequency(args.step_s),
                            extra={"setpoint_w": 0.0},
                        )
                    )
                )
            )
            publisher.start()
            time.sleep(args.warmup_s)
            if args.pyspy_dir is not None:
                args.pyspy_dir.mkdir(parents=True, exist_ok=True)
                out = args.pyspy_dir / f"pipeline-{mode}-{n}.txt"
                spy = pyspy_record(PYSPY, pipeline.pid, out, args.duration_s, "--idle", "--threads")
            cpu0 = {k: busy_s(v) for k, v in groups.items()}
            machine0, t0, from_ms = machine_busy_s(), time.monotonic(), time.time_ns() / 1e6
            publisher.join()
            cpu1 = {k: busy_s(v) for k, v in groups.items()}
            machine1, t1, until_ms = machine_busy_s(), time.monotonic(), time.time_ns() / 1e6
            rss = rss_mib(groups["pipeline"])
            time.sleep(args.drain_s)
        finally:
            if spy is not None:
                stop_process(spy, timeout_s=30)  # it ends by itself after the window
            rc = stop_process(pipeline, timeout_s=60)
            time.sleep(1)  # the last commands of the shutdown reach the subscriber
            stop.set()
        if not results_in.poll(120):
            raise RuntimeError("subscriber sent no results")
        commands, summaries = results_in.recv()
        subscriber.join(10)
        if args.samples_file is not None:
            path = args.samples_file
            if len(args.n or [0, 0]) > 1:
                path = path.with_name(f"{path.stem}-{n}{path.suffix}")
            write_samples(path, commands)
            write_events(path.with_name(f"{path.stem}-events.csv"), data_dir, gc_dir)
        con = connect(data_dir)
        readings = con.execute("select count(*) from telemetry").fetchall()[0][0]
        history_ids = {
            cid
            for (cid,) in con.execute(
                "select command_id from commands where ts_ms >= ? and ts_ms < ?",
                [from_ms, until_ms],
            ).fetchall()
        }
        history_all = con.execute("select count(*) from commands").fetchall()[0][0]
        recovery = any((data_dir / "recovery").glob("*"))
    elapsed_s = t1 - t0
    first = first_arrivals(commands)
    window = [c for c in first.values() if from_ms <= c.ts_ms < until_ms]
    latency = [c.arrived_ms - c.ts_ms for c in window]
    inbound = [c.issued_ms - c.ts_ms for c in window]
    outbound = [c.arrived_ms - c.issued_ms for c in window]
    received_ids = {c.command_id for c in window}
    cpu = {k: 100 * (cpu1[k] - cpu0[k]) / elapsed_s for k in groups}
    machine = 100 * (machine1 - machine0) / elapsed_s
    last = summaries[-1] if summaries else {}
    return {
        "n": n,
        "mode": mode,
        "sent": counts["sent"],
        "sent_per_s": counts["sent"] / (args.warmup_s + args.duration_s),
        "dropped": counts["dropped"],
        "readings": readings,
        "history_pct": 100 * readings / counts["sent"] if counts["sent"] else None,
        "commands_per_s": len(window) / elapsed_s,
        "p50_ms": percentile(latency, 0.5),
        "p99_ms": percentile(latency, 0.99),
        "max_ms": max(latency, default=None),
        "in_p50_ms": percentile(inbound, 0.5),
        "in_p99_ms": percentile(inbound, 0.99),
        "out_p50_ms": percentile(outbound, 0.5),
        "out_p99_ms": percentile(outbound, 0.99),
        "history_commands": len(history_ids),
        "received_commands": len(received_ids),
        "lost": len(history_ids - received_ids),
        "not_in_history": len(received_ids - history_ids),
        "duplicates": len(commands) - len(first),
        "received_all": len(first),
        "history_all": history_all,
        "cpu": cpu,
        "other_pct": machine - sum(cpu.values()),
        "rss_mib": rss,
        "summaries_per_s": len(summaries) / (args.warmup_s + args.duration_s + args.drain_s),
        "summary": {k: last.get(k) for k in ("requested_w", "allocated_w", "shortfall_w")},
        "recovery": recovery,
        "exit": rc,
    }


HEADER = (
    "| N | mode | readings/s | in history % | commands/s | p50 ms | p99 ms | max ms "
    "| in p50/p99 ms | out p50/p99 ms | window commands: history / received | lost "
    "| pipeline CPU % | RSS MiB | mosquitto CPU % | subscriber CPU % | publisher CPU % "
    "| other CPU % |\n"
    "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
    "| ---: | ---: | ---: | ---: | ---: | ---: |"
)


def row(r: dict[str, Any]) -> str:
    cpu = r["cpu"]
    cells = [
        str(r["n"]),
        r["mode"],
        f"{r['sent_per_s']:.0f}",
        fmt(r["history_pct"], ".2f"),
        f"{r['commands_per_s']:.0f}",
        fmt(r["p50_ms"], ".1f"),
        fmt(r["p99_ms"], ".1f"),
        fmt(r["max_ms"], ".1f"),
        f"{fmt(r['in_p50_ms'], '.1f')} / {fmt(r['in_p99_ms'], '.1f')}",
        f"{fmt(r['out_p50_ms'], '.1f')} / {fmt(r['out_p99_ms'], '.1f')}",
        f"{r['history_commands']} / {r['received_commands']}",
        str(r["lost"]),
        f"{cpu['pipeline']:.0f}",
        f"{r['rss_mib']:.0f}",
        f"{cpu['mosquitto']:.0f}",
        f"{cpu['subscriber']:.0f}",
        f"{cpu['bench']:.0f}",
        f"{r['other_pct']:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def notes(r: dict[str, Any]) -> str:
    lost_readings = r["sent"] - r["readings"]
    s = r["summary"]
    verdict = (
        "nothing lost"
        if r["lost"] == 0 and r["not_in_history"] == 0 and lost_readings == 0
        else "LOST MESSAGES"
    )
    return (
        f"N={r['n']}: {verdict}: readings {r['readings']}/{r['sent']} in history "
        f"(publisher dropped {r['dropped']}); commands, measured window: {r['lost']} in history "
        f"but not received, {r['not_in_history']} received but not in history; whole run: "
        f"{r['history_all']} in history, {r['received_all']} received "
        f"({r['duplicates']} duplicate deliveries); summaries {r['summaries_per_s']:.2f}/s, "
        f"last requested/allocated/shortfall W {s['requested_w']}/{s['allocated_w']}/"
        f"{s['shortfall_w']}; recovery snapshots written: {'yes' if r['recovery'] else 'no'}; "
        f"pipeline exit {r['exit']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, action="append", help="inverters (repeatable)")
    parser.add_argument("--mode", choices=("fcr", "droop"), default="fcr")
    parser.add_argument(
        "--warmup-s", type=float, default=10.0, help="publishing before the measurement"
    )
    parser.add_argument("--duration-s", type=float, default=30.0, help="measured time per N")
    parser.add_argument("--drain-s", type=float, default=5.0, help="time to catch up after")
    parser.add_argument("--step-s", type=float, default=3.0, help="time between frequency steps")
    parser.add_argument(
        "--snapshot-s",
        type=float,
        default=5.0,
        help="recovery snapshot interval of the pipeline, s (default 5, the site default; "
        "0 turns recovery off)",
    )
    parser.add_argument("--samples-file", type=Path, help="write every command received")
    parser.add_argument("--pyspy-dir", type=Path, help="py-spy the pipeline process")
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
        f"{os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, python {sys.version.split()[0]}; "
        f"telemetry every {INTERVAL_S * 1000:.0f} ms per inverter, frequency step every "
        f"{args.step_s:g} s, {args.warmup_s:g} s warm-up + {args.duration_s:g} s measured"
    )
    print_busiest_processes()
    results = []
    print()
    print(HEADER, flush=True)
    for n in args.n or [500, 1000, 2000]:
        results.append(run_one(n, args.mode, args))
        print(row(results[-1]), flush=True)
    print()
    for r in results:
        print(notes(r))
    return 0 if all(r["lost"] == 0 and r["sent"] == r["readings"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
