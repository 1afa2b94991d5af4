"""Benchmark: the central level with N simulated sites (summaries only, no devices).

Starts a central Mosquitto and one ``gridflex central`` process (allocation every
``--interval-s``), and publishes, as N site bridges would, each site's retained
``summary/1`` once a second with a flexibility that changes every second. Per N it prints:

- the bytes per second going up (summary topic + payload, what the bridges carry) against
  the raw telemetry of the same sites (``--assets-per-site`` inverters at 5 Hz, a full
  ``telemetry/1`` message each) that stays on the sites;
- the allocation's compute time (``CentralDispatcher.allocate`` and the targets' JSON, in
  this process over ``--rounds`` rounds, p50/p99);
- summary-to-target latency end to end: from a site's summary publish to the arrival of
  the first target computed from it (through the broker and ``gridflex central``; it
  includes the wait for the next allocation round, up to ``--interval-s``: the sites
  publish at random moments of each second, as unsynchronised sites do), p50/p99;
- target delivery: from the allocation (the target's ``ts_ms``) to its arrival, p50/p99;
- the central process's CPU (100 % = one core).

    .venv/bin/python bench/central.py                       # N = 3, 10, 30, 20 s each
    .venv/bin/python bench/central.py -n 100 --duration-s 30
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench._harness import INTERVAL_S, busy_s, fmt, percentile, stop_process, tree
from gridflex.broker import start_broker
from gridflex.central import CentralDispatcher, parse_central
from gridflex.contract import (
    SiteSummary,
    SiteTarget,
    Telemetry,
    parse_payload,
    summary_topic,
    telemetry_topic,
)
from gridflex.demo.sites import central_toml
from gridflex.mqtt import MqttClient

ROOT = Path(__file__).resolve().parents[1]
FLEX_BASE_W = 100_000.0


def telemetry_bytes() -> int:
    """Topic + payload bytes of one full inverter reading (what a site publishes 5x/s)."""
    t = Telemetry(
        site="site-0001",
        asset="inv-00001",
        kind="inverter",
        ts_ms=1_764_500_000_000,
        seq=123_456,
        boot="b0d3c0ffee",
        power_w=-4_321.5,
        freq_hz=49.987,
        voltage_v=230.4,
        current_a=-18.76,
        soc_pct=54.3,
        energy_import_wh=123_456.7,
        energy_export_wh=98_765.4,
        temp_c=31.2,
        setpoint_w=-4_300.0,
        status="discharging",
        device_status="RUNNING",
    )
    return len(telemetry_topic("site-0001", "inverter", "inv-00001")) + len(t.to_json())


def summary(site: str, seq: int, assets: int) -> SiteSummary:
    """A site's summary whose flexibility encodes ``seq`` (to match targets to it)."""
    flex = FLEX_BASE_W + seq % 1000
    return SiteSummary(
        site=site,
        ts_ms=time.time_ns() // 1_000_000,
        seq=seq,
        mode="fcr",
        assets_total=assets,
        assets_online=assets,
        power_w=-12_345.6,
        flex_charge_w=flex,
        flex_discharge_w=flex,
        freq_hz=49.987,
        base_w=0.0,
        requested_w=-5_000.0,
        allocated_w=-5_000.0,
        shortfall_w=0.0,
    )


def compute_ms(n: int, rounds: int) -> tuple[float | None, float | None]:
    """p50/p99 of one allocation round over ``n`` sites (allocate + JSON of every target)."""
    sites = [f"site-{i:04d}" for i in range(n)]
    state = CentralDispatcher(parse_central(_doc(sites, "mqtt://127.0.0.1:1883")))
    now = 1_000_000
    times = []
    for r in range(rounds):
        for i, site in enumerate(sites):
            state.on_summary(summary(site, r + i, 1000), now)
        t0 = time.perf_counter()
        for target in state.allocate(now):
            target.to_json()
        times.append((time.perf_counter() - t0) * 1000)
        now += 1000
    return percentile(times, 0.5), percentile(times, 0.99)


def _doc(sites: list[str], url: str) -> dict[str, object]:
    import tomllib

    return tomllib.loads(central_toml(sites, url, 0.3 * FLEX_BASE_W * len(sites)))


def run(n: int, duration_s: float, interval_s: float, assets: int) -> dict[str, float | None]:
    """One N: the central process against N simulated site bridges."""
    sites = [f"site-{i:04d}" for i in range(n)]
    broker = start_broker("mosquitto")
    tmp = tempfile.TemporaryDirectory(prefix="gridflex-bench-central-")
    conf = Path(tmp.name) / "central.toml"
    conf.write_text(
        central_toml(sites, broker.url, 0.3 * FLEX_BASE_W * n).replace(
            "interval_s = 1.0", f"interval_s = {interval_s}"
        ),
        encoding="utf-8",
    )
    central = subprocess.Popen(
        [sys.executable, "-m", "gridflex.cli", "central", "--config", str(conf)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sent: dict[tuple[str, int], float] = {}  # (site, flex) -> publish time
    latencies: list[float] = []
    delivery: list[float] = []  # target made (its ts_ms) to target received, ms
    lock = threading.Lock()

    def on_target(_topic: str, payload: bytes) -> None:
        now = time.monotonic()
        wall_ms = time.time_ns() / 1e6
        t = parse_payload(payload)
        if not isinstance(t, SiteTarget):
            return
        with lock:
            delivery.append(wall_ms - t.ts_ms)
            published = sent.pop((t.site, round(t.flex_w)), None)
            if published is not None:
                latencies.append((now - published) * 1000)

    sub = MqttClient(broker.url, "bench-targets", clean_session=True)
    sub.subscribe("gridflex/v1/+/target", on_target)
    sub.start()
    pub = MqttClient(broker.url, "bench-sites", clean_session=True)
    pub.start()
    up_bytes = 0
    try:
        assert sub.wait_connected(10) and pub.wait_connected(10)
        warmup_s = 3.0
        start = time.monotonic()
        procs = tree(central.pid)
        cpu0 = measured_from = None
        seq = 0
        while time.monotonic() - start < warmup_s + duration_s:
            tick = time.monotonic()
            measuring = tick - start >= warmup_s
            if measuring and cpu0 is None:
                cpu0, measured_from = busy_s(procs), tick
                with lock:
                    latencies.clear()
                    delivery.clear()
            # Sites are not in step: each publishes at its own random moment of the second.
            offsets = sorted((random.random() * 0.95, site) for site in sites)
            for offset, site in offsets:
                time.sleep(max(0.0, tick + offset - time.monotonic()))
                s = summary(site, seq, assets)
                body = s.to_json()
                with lock:
                    sent[(site, round(s.flex_charge_w))] = time.monotonic()
                pub.publish(summary_topic(site), body, qos=1, retain=True)
                if measuring:
                    up_bytes += len(summary_topic(site)) + len(body)
            seq += 1
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        elapsed = time.monotonic() - (measured_from or start)
        cpu = (busy_s(procs) - (cpu0 or 0.0)) / elapsed * 100
    finally:
        pub.stop()
        sub.stop()
        code = stop_process(central)
        broker.stop()
        tmp.cleanup()
    raw = n * assets * telemetry_bytes() / INTERVAL_S
    with lock:
        lat, dlv = list(latencies), list(delivery)
    return {
        "dlv_p50": percentile(dlv, 0.5),
        "dlv_p99": percentile(dlv, 0.99),
        "up_bytes_s": up_bytes / elapsed,
        "raw_bytes_s": raw,
        "lat_p50": percentile(lat, 0.5),
        "lat_p99": percentile(lat, 0.99),
        "lat_n": float(len(lat)),
        "cpu": cpu,
        "exit": float(code),
    }


def main() -> int:
    """Run the N values given and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, action="append", help="sites (repeatable)")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--interval-s", type=float, default=1.0, help="central's round")
    parser.add_argument("--assets-per-site", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2000, help="rounds timed in-process")
    args = parser.parse_args()
    print(f"telemetry message: {telemetry_bytes()} bytes (topic + payload)")
    print(
        "| sites | up B/s (summaries) | raw telemetry B/s | ratio | compute p50 ms | p99 ms "
        "| summary->target p50 ms | p99 ms | target delivery p50 ms | p99 ms | targets "
        "| central CPU % | exit |"
    )
    print("| ---: " * 13 + "|")
    for n in args.n or [3, 10, 30]:
        c50, c99 = compute_ms(n, args.rounds)
        r = run(n, args.duration_s, args.interval_s, args.assets_per_site)
        up, raw = r["up_bytes_s"] or 0.0, r["raw_bytes_s"] or 0.0
        print(
            f"| {n} | {up:,.0f} | {raw:,.0f} | 1/{raw / up:,.0f} | {fmt(c50, '.3f')} "
            f"| {fmt(c99, '.3f')} | {fmt(r['lat_p50'], '.0f')} | {fmt(r['lat_p99'], '.0f')} "
            f"| {fmt(r['dlv_p50'], '.1f')} | {fmt(r['dlv_p99'], '.1f')} "
            f"| {r['lat_n']:.0f} | {fmt(r['cpu'], '.1f')} | {r['exit']:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
