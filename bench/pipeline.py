"""Benchmark: the Bytewax pipeline taking N inverters' telemetry at 5 Hz into analytics and history.

Starts Mosquitto (``gridflex.broker``), opens the pipeline's persistent session, starts ONE
``gridflex pipeline`` process (it runs its MQTT receiver as a child process), and sends
from this process valid ``telemetry/1`` messages for N inverters every 200 ms (QoS 1,
``gridflex.mqtt_asyncio``, spread over the interval, frequency around 50 Hz) for
``--warmup-s`` + ``--duration-s``. Then it gives the pipeline ``--drain-s`` to catch up,
stops it (SIGTERM: it flushes its windows and Parquet files) and reads the history back
with DuckDB.

Per N it prints: messages/s published; how much of what was published is in the history
(de-duplicated on asset, boot, seq); the grid-frequency windows that ended in the measured
time and how long after its end each reached MQTT (p50/p99/max; the 500 ms allowed
lateness is part of every delay); and, over the measured time, the pipeline's CPU %
(pipeline + receiver, 100 = one core) and RSS.

    .venv/bin/python bench/pipeline.py                 # N = 100, 1000, 2000; 10 + 30 s each
    .venv/bin/python bench/pipeline.py -n 2000 --duration-s 60
    .venv/bin/python bench/pipeline.py -n 1000 -n 2000 --durable-ack both

``--durable-ack on|off|both`` (default ``on``, the pipeline's default): with ``on`` the
receiver acknowledges a message to the broker only once it is in the write-ahead log
(appended and fsynced in groups, ``pipelines.wal``). With ``both`` each N runs with and
then without, and a ratio line follows (on / off) for the history rate (rows of the
history per second of publishing: the publish rate when the pipeline keeps up), the
window p99 and the CPU. At these loads the pipeline keeps up either way, so the same
run also measures the hop that changed at its ceiling: a receiver process (as the
pipeline runs it) draining a backlog of ``--backlog`` messages from its persistent
session, messages/s with and without the log (with it, the broker's in-flight window of
100 waits for each group's fsync).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import psutil

from bench._harness import (
    INTERVAL_S,
    busy_s,
    fmt,
    percentile,
    pipeline_site_toml,
    print_busiest_processes,
    publish_telemetry,
    rss_mib,
    start_pipeline,
    stop_process,
    tree,
)
from gridflex.broker import start_broker
from gridflex.contract import grid_frequency_topic
from gridflex.mqtt import MqttClient, open_session, parse_url
from gridflex.mqtt_asyncio import AsyncMqttClient
from pipelines.mqtt_receiver import ReceiverSettings, receiver_main

SITE = "bench"


# --------------------------------------------------------------------------- one run


class WindowProbe:
    """Arrival delay (ms after the window's end) of every grid-frequency window."""

    def __init__(self, url: str) -> None:
        self.lock = threading.Lock()
        self.windows: list[tuple[float, float]] = []  # (window end, ms after it on MQTT)
        self.client = MqttClient(url, f"bench-pipeline-probe-{os.getpid()}", clean_session=True)
        self.client.subscribe(grid_frequency_topic(SITE), self._on_window)

    def _on_window(self, _topic: str, payload: bytes) -> None:
        now_ms = time.time_ns() / 1e6
        window = json.loads(payload)
        with self.lock:
            self.windows.append((window["window_end_ms"], now_ms - window["window_end_ms"]))

    def delays_ms(self, from_ms: float, until_ms: float) -> list[float]:
        """Delays of the windows that ended between ``from_ms`` and ``until_ms``.

        Windows before ``from_ms`` carry the pipeline's start-up (imports, first files);
        a window still waiting for readings when they stop is closed by the pipeline's
        idle timeout instead. Neither measures the stream's pace.
        """
        with self.lock:
            return [delay for end_ms, delay in self.windows if from_ms <= end_ms <= until_ms]

    def __enter__(self) -> WindowProbe:
        self.client.start()
        if not self.client.wait_connected(10):
            raise RuntimeError("probe: no broker")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.stop()


@dataclass
class Load:
    """What :func:`measure_load` saw over its measured time."""

    counts: dict[str, int]  # the publisher's: sent, dropped
    cpu_pct: float  # of the processes measured, 100 = one core
    rss_mib: float
    delays_ms: list[float]  # each closed window's delay after its end
    cpu_pct_each: list[float] = field(default_factory=list)  # per process, in ``procs`` order


def measure_load(
    url: str,
    n: int,
    procs: list[psutil.Process],
    *,
    warmup_s: float,
    duration_s: float,
    drain_s: float,
) -> Load:
    """Publish N inverters' telemetry for warm-up + duration; measure ``procs`` after warm-up.

    The window delays count the windows that end from the measurement's start to 1 s before
    the readings stop (a window is closed by readings up to its end + the allowed lateness,
    500 ms; one that ends later is closed by the idle timeout instead).
    """
    counts: dict[str, int] = {}
    with WindowProbe(url) as probe:
        publisher = threading.Thread(
            target=lambda: counts.update(
                asyncio.run(
                    publish_telemetry(
                        url, SITE, n, warmup_s + duration_s, freq_hz=noisy_frequency()
                    )
                )
            )
        )
        publisher.start()
        time.sleep(warmup_s)
        each0, t0, from_ms = [busy_s([p]) for p in procs], time.monotonic(), time.time_ns() / 1e6
        publisher.join()
        each1, t1, until_ms = [busy_s([p]) for p in procs], time.monotonic(), time.time_ns() / 1e6
        rss = rss_mib(procs)
        time.sleep(drain_s)
    each = [100 * (b - a) / (t1 - t0) for a, b in zip(each0, each1, strict=True)]
    delays = probe.delays_ms(from_ms, until_ms - 1000)
    return Load(counts, sum(each), rss, delays, each)


def readings_in_history(data_dir: Path) -> int:
    """Distinct readings (asset, boot, seq) in a history folder's telemetry files."""
    files = str(data_dir / "telemetry" / "**" / "*.parquet")
    distinct = f"select distinct asset, boot, seq from read_parquet('{files}')"
    return int(duckdb.connect().execute(f"select count(*) from ({distinct})").fetchall()[0][0])


def noisy_frequency() -> Callable[[float], float]:
    """Each message's frequency: 50 Hz with Gaussian noise (sigma 20 mHz)."""
    rng = random.Random(2)
    return lambda _elapsed_s: round(50 + rng.gauss(0, 0.02), 4)


def run_one(
    n: int, warmup_s: float, duration_s: float, drain_s: float, *, durable_ack: bool = True
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gridflex-bench-") as tmp, start_broker() as broker:
        data_dir = Path(tmp) / "history"
        site = Path(tmp) / "site.toml"
        site.write_text(
            pipeline_site_toml(SITE, broker.url, data_dir)
            + f"\n[pipeline]\ndurable_ack = {'true' if durable_ack else 'false'}\n",
            encoding="utf-8",
        )
        # the session exists before the first message: nothing published is missed
        pipeline = start_pipeline(broker.url, SITE, site)
        try:
            time.sleep(5)  # imports, Bytewax start, receiver connected
            load = measure_load(
                broker.url,
                n,
                tree(pipeline.pid),
                warmup_s=warmup_s,
                duration_s=duration_s,
                drain_s=drain_s,
            )
        finally:
            rc = stop_process(pipeline, timeout_s=60)
        rows = readings_in_history(data_dir)
    counts, delays = load.counts, load.delays_ms
    return {
        "n": n,
        "durable_ack": durable_ack,
        "sent_per_s": counts["sent"] / (warmup_s + duration_s),
        "history_per_s": rows / (warmup_s + duration_s),
        "in_history_pct": 100 * rows / counts["sent"] if counts["sent"] else None,
        "windows": len(delays),
        "p50_ms": percentile(delays, 0.5),
        "p99_ms": percentile(delays, 0.99),
        "max_ms": max(delays, default=None),
        "cpu_pct": load.cpu_pct,
        "rss_mib": load.rss_mib,
        "dropped": counts["dropped"],
        "exit": rc,
    }


async def _publish_backlog(url: str, topic: str, count: int) -> None:
    pub = AsyncMqttClient(url, f"bench-backlog-{os.getpid()}", clean_session=True)
    await pub.start()
    if not await pub.wait_connected(10):
        raise RuntimeError("backlog publisher: no broker")
    payload = json.dumps(
        {"schema": "telemetry/1", "site": SITE, "asset": "inv-00001", "kind": "inverter"}
        | {"ts_ms": 1_700_000_000_000, "seq": 1, "boot": "b", "power_w": -1500.0}
        | {"freq_hz": 50.0, "voltage_v": 230.0, "energy_import_wh": 1, "energy_export_wh": 2}
    ).encode()
    for i in range(count):
        while not pub.publish(topic, payload):
            await asyncio.sleep(0.01)  # queue full: let it drain
        if i % 1000 == 0:
            await asyncio.sleep(0)
    if not await pub.flush(120):
        raise RuntimeError("backlog publisher: not every message was acknowledged")
    await pub.stop()


def receiver_capacity(count: int, *, durable_ack: bool) -> float:
    """Messages/s of a receiver process draining ``count`` messages from its session."""
    with tempfile.TemporaryDirectory(prefix="gridflex-bench-") as tmp, start_broker() as broker:
        client_id = f"bench-receiver-{os.getpid()}"
        topic = f"gridflex/v1/{SITE}/inverter/inv-00001/telemetry"
        open_session(broker.url, client_id, topic)
        asyncio.run(_publish_backlog(broker.url, topic, count))
        host, port, tls = parse_url(broker.url)
        settings = ReceiverSettings(
            host=host,
            port=port,
            tls=tls,
            client_id=client_id,
            topic_filters=(topic,),
            wal_dir=str(Path(tmp) / "wal") if durable_ack else None,
        )
        ctx = multiprocessing.get_context("spawn")
        conn, child_conn = ctx.Pipe(duplex=False)
        child_control, control = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=receiver_main, args=(settings, child_conn, child_control))
        proc.start()
        got, first, last = 0, 0.0, 0.0
        while got < count and conn.poll(60):
            _through_ms, batch, *_counters = conn.recv()
            if batch:
                last = time.monotonic()
                first = first or last
                got += len(batch)
        control.send("stop")
        while conn.poll(30) and conn.recv() is not None:
            pass
        proc.join(30)
    return got / (last - first) if last > first else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, action="append", help="inverters (repeatable)")
    parser.add_argument(
        "--warmup-s", type=float, default=10.0, help="publishing before the measurement"
    )
    parser.add_argument("--duration-s", type=float, default=30.0, help="measured time per N")
    parser.add_argument(
        "--drain-s", type=float, default=10.0, help="time to catch up after publishing"
    )
    parser.add_argument(
        "--durable-ack",
        choices=("on", "off", "both"),
        default="on",
        help="PUBACK only once in the write-ahead log (on), on receipt (off), or both",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=50_000,
        help="messages of the receiver-capacity run (0: skip it)",
    )
    args = parser.parse_args()
    settings = {"on": [True], "off": [False], "both": [True, False]}[args.durable_ack]
    print(
        f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, telemetry every "
        f"{INTERVAL_S * 1000:.0f} ms per inverter, {args.duration_s:.0f} s per run"
    )
    print_busiest_processes()
    header = (
        f"{'N':>5} {'ack':>4} {'sent/s':>7} {'hist/s':>7} {'history %':>9} {'windows':>7} "
        f"{'p50 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'CPU %':>6} {'RSS MiB':>8} {'dropped':>7} {'exit':>4}"
    )
    print(header)
    print("-" * len(header))
    for n in args.n or [100, 1000, 2000]:
        results = []
        for durable in settings:
            r = run_one(n, args.warmup_s, args.duration_s, args.drain_s, durable_ack=durable)
            results.append(r)
            print(
                f"{r['n']:>5} {'wal' if durable else 'recv':>4} {r['sent_per_s']:>7.0f} "
                f"{r['history_per_s']:>7.0f} {fmt(r['in_history_pct'], '.2f'):>9} "
                f"{r['windows']:>7} {fmt(r['p50_ms'], '.0f'):>7} {fmt(r['p99_ms'], '.0f'):>7} "
                f"{fmt(r['max_ms'], '.0f'):>7} {r['cpu_pct']:>6.0f} "
                f"{r['rss_mib']:>8.0f} {r['dropped']:>7} {r['exit']:>4}",
                flush=True,
            )
        if len(results) == 2:
            print(f"{n:>5} on/off: {ratios(results[0], results[1])}", flush=True)
    if args.backlog:
        print(f"receiver draining a backlog of {args.backlog} messages (messages/s):")
        rates = {d: receiver_capacity(args.backlog, durable_ack=d) for d in settings}
        for durable, rate in rates.items():
            print(f"  {'wal' if durable else 'recv':>4} {rate:>8.0f}", flush=True)
        if len(rates) == 2 and rates[False]:
            print(f"  on/off: x{rates[True] / rates[False]:.2f}", flush=True)
    return 0


def ratios(on: dict[str, Any], off: dict[str, Any]) -> str:
    """The cost of durable acknowledgement: history rate, window p99 and CPU, on / off."""

    def ratio(key: str) -> str:
        a, b = on[key], off[key]
        return "-" if a is None or not b else f"{a / b:.2f}"

    return (
        f"history rate x{ratio('history_per_s')}, p99 x{ratio('p99_ms')}, CPU x{ratio('cpu_pct')}"
    )


if __name__ == "__main__":
    sys.exit(main())
