"""Benchmark: one CSMS process with N simulated OCPP stations sending meter values every second.

Starts Mosquitto (``gridflex.broker``), ONE ``gridflex collect ocpp`` process and the
stations in ``--sim-procs`` separate ``gridflex sim chargers`` processes (a mix of OCPP
2.0.1 and 2.1 stations, each with a car plugged in, so each sends a TransactionEvent with
meter values every second). A subscriber in this process takes every telemetry message off
MQTT and computes the latency from the station's send (the meter value's timestamp, taken
when the station builds the message) to its arrival on MQTT. After a warm-up (all stations
connected, sampling interval set, the rate steady) it measures for ``--duration-s`` and
prints one row per N: telemetry messages/s handled, p50/p99/max latency, the CSMS's CPU %
(of one core) and RSS, the simulators' CPU %, and the whole machine's CPU % (of all cores) and
load: the simulators, Mosquitto and this subscriber share the machine with the CSMS, so a
busy machine shows in the latency.

    .venv/bin/python bench/ocpp.py                     # N = 200, 500, 1000; 20 s each
    .venv/bin/python bench/ocpp.py -n 1000 --duration-s 60
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from gridflex.broker import start_broker
from gridflex.mqtt import MqttClient
from gridflex.net import free_port

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench-password-0123456789"
SITE = "bench"


def site_toml(prefixes: list[tuple[str, int]], port: int, mqtt_url: str) -> str:
    lines = [
        f'[site]\nid = "{SITE}"\n',
        f'[mqtt]\nurl = "{mqtt_url}"\nqueue_limit = 1000000\n',
        f'[ocpp]\nhost = "127.0.0.1"\nport = {port}\nmeter_interval_s = 1.0\n'
        "response_timeout_s = 30\nsecurity_profile = 1\n",
    ]
    for prefix, count in prefixes:
        for n in range(1, count + 1):
            station = f"{prefix}-{n:04d}"
            lines.append(
                f'[[assets]]\nid = "{station}"\nkind = "evse"\npassword = "{PASSWORD}"\n'
                "max_charge_w = 22000\nmax_discharge_w = 11000\n"
            )
    return "\n".join(lines)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class LatencyProbe:
    """Collects (arrival - meter timestamp) in ms for every telemetry message."""

    def __init__(self, url: str) -> None:
        self.lock = threading.Lock()
        self.latencies_ms: list[float] = []
        self.count = 0
        self.assets: set[str] = set()
        self.client = MqttClient(url, f"bench-ocpp-{os.getpid()}", clean_session=True)
        self.collector_online = threading.Event()
        # QoS 0 on the probe's own leg: the CSMS still publishes at QoS 1; this keeps the
        # measuring subscriber (on the same 2 cores) from adding PUBACK traffic of its own.
        self.client.subscribe(f"gridflex/v1/{SITE}/evse/+/telemetry", self.on_message, qos=0)
        self.client.subscribe(f"gridflex/v1/{SITE}/collector/ocpp/status", self.on_collector)
        self.client.start()
        if not self.client.wait_connected(10):
            raise RuntimeError("bench subscriber could not connect")

    def on_message(self, _topic: str, payload: bytes) -> None:
        now_ms = time.time() * 1000
        msg = json.loads(payload)
        with self.lock:
            self.count += 1
            self.latencies_ms.append(now_ms - msg["ts_ms"])
            self.assets.add(msg["asset"])

    def on_collector(self, _topic: str, payload: bytes) -> None:
        if json.loads(payload).get("online"):
            self.collector_online.set()

    def take(self) -> tuple[int, list[float]]:
        with self.lock:
            count, lat = self.count, self.latencies_ms
            self.count, self.latencies_ms = 0, []
        return count, lat

    def close(self) -> None:
        self.client.stop(flush_timeout_s=0.5)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def run_one(
    n: int,
    sim_procs: int,
    warmup_s: float,
    duration_s: float,
    mqtt_url: str,
    *,
    mqtt_client: str = "thread",
) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    python = sys.executable
    per_proc = -(-n // sim_procs)
    prefixes = []
    remaining = n
    for k in range(sim_procs):
        count = min(per_proc, remaining)
        if count > 0:
            prefixes.append((f"b{k}", count))
            remaining -= count
    port = free_port()
    probe = LatencyProbe(mqtt_url)
    sims: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="gridflex-bench-ocpp-") as tmp:
        site = Path(tmp) / "site.toml"
        site.write_text(site_toml(prefixes, port, mqtt_url), encoding="utf-8")
        csms = subprocess.Popen(
            [
                python,
                "-m",
                "gridflex.cli",
                "--log-level=WARNING",
                "collect",
                "ocpp",
                "--site",
                str(site),
                "--mqtt-client",
                mqtt_client,
            ],
            cwd=ROOT,
            env=env,
        )
        try:
            if not probe.collector_online.wait(30):
                raise RuntimeError("the CSMS did not come online")
            for k, (prefix, count) in enumerate(prefixes):
                sims.append(
                    subprocess.Popen(
                        [
                            python,
                            "-m",
                            "gridflex.cli",
                            "--log-level=WARNING",
                            "sim",
                            "chargers",
                            "--count",
                            str(count),
                            "--csms-url",
                            f"ws://127.0.0.1:{port}/ocpp",
                            "--id-prefix",
                            prefix,
                            "--password",
                            PASSWORD,
                            "--ocpp",
                            "mix",
                            "--seed",
                            str(k + 1),
                            "--ramp-s",
                            str(max(2.0, count / 100)),
                        ],
                        cwd=ROOT,
                        env=env,
                    )
                )
            # warm-up: every station reports and the rate is steady at ~n/s
            deadline = time.monotonic() + warmup_s
            probe.take()
            while time.monotonic() < deadline:
                time.sleep(2.0)
                count, _ = probe.take()
                if len(probe.assets) >= n and count >= 0.97 * n * 2.0:
                    break
            else:
                print(
                    f"warning: warm-up incomplete: {len(probe.assets)}/{n} stations reporting",
                    file=sys.stderr,
                )
            csms_ps = psutil.Process(csms.pid)
            sim_ps = [psutil.Process(p.pid) for p in sims]
            csms_ps.cpu_percent(None)
            psutil.cpu_percent(None)
            for p in sim_ps:
                p.cpu_percent(None)
            probe.take()
            started = time.monotonic()
            time.sleep(duration_s)
            count, latencies = probe.take()
            elapsed = time.monotonic() - started
            csms_cpu = csms_ps.cpu_percent(None)
            sims_cpu = sum(p.cpu_percent(None) for p in sim_ps)
            machine_cpu = psutil.cpu_percent(None)
            load_1m = os.getloadavg()[0]
            rss_mb = csms_ps.memory_info().rss / 1e6
        finally:
            for sim in sims:
                stop_process(sim)
            code = stop_process(csms)
            probe.close()
    return {
        "stations": n,
        "msgs_per_s": count / elapsed,
        "expected_per_s": float(n),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "csms_cpu_pct": csms_cpu,
        "csms_rss_mb": rss_mb,
        "sims_cpu_pct": sims_cpu,
        "machine_cpu_pct": machine_cpu,
        "load_1m": load_1m,
        "csms_exit": code,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, action="append", help="stations (repeatable)")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--sim-procs", type=int, default=2)
    parser.add_argument("--mqtt-client", choices=("thread", "asyncio"), default="thread")
    args = parser.parse_args()
    sizes = args.n or [200, 500, 1000]
    broker = start_broker("mosquitto")
    rows = []
    try:
        for n in sizes:
            rows.append(
                run_one(
                    n,
                    args.sim_procs,
                    args.warmup_s,
                    args.duration_s,
                    broker.url,
                    mqtt_client=args.mqtt_client,
                )
            )
            time.sleep(1.0)
    finally:
        broker.stop()
    print()
    print(
        f"OCPP CSMS benchmark: {args.duration_s:.0f} s per row, meter values every 1 s, "
        f"{args.sim_procs} simulator processes, {psutil.cpu_count()} cores, "
        f"{args.mqtt_client} MQTT client"
    )
    print()
    print(
        "| stations | telemetry msg/s (expected) | p50 ms | p99 ms | max ms "
        "| CSMS CPU % | CSMS RSS MB | sims CPU % | machine CPU % | load 1 min |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['stations']} | {r['msgs_per_s']:.0f} ({r['expected_per_s']:.0f}) "
            f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} "
            f"| {r['csms_cpu_pct']:.0f} | {r['csms_rss_mb']:.0f} | {r['sims_cpu_pct']:.0f} "
            f"| {r['machine_cpu_pct']:.0f} | {r['load_1m']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
