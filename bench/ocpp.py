"""Benchmark: one CSMS process with N simulated OCPP stations sending meter values every second.

Starts Mosquitto (``gridflex.broker``), ONE ``gridflex collect ocpp`` process and the
stations in ``--sim-procs`` separate ``gridflex sim chargers`` processes (a mix of OCPP
2.0.1 and 2.1 stations, each with a car plugged in, so each sends a TransactionEvent with
meter values every second). A subscriber in this process takes every telemetry message off
MQTT and computes the latency from the station's send (the meter value's timestamp, taken
when the station builds the message, milliseconds) to its arrival at the subscriber. So the
latency covers the station's WebSocket write, the CSMS, Mosquitto and the subscriber.

Warm-up: once every station reports and the rate is steady at ~N/s (at most
``--warmup-s``), it waits ``--settle-s`` more (start-up work, such as the first full garbage
collections, is over by then), then measures for ``--duration-s`` and prints one row per N:
telemetry messages/s handled, p50/p99/max latency, the CSMS's CPU % (of one core; user +
system) and RSS, then where the rest of the machine's CPU went: the simulators, Mosquitto,
this process (the subscriber) and everything else. All of it shares the machine's cores
with the CSMS, so a busy machine shows in the latency.

    .venv/bin/python bench/ocpp.py                     # N = 200, 500, 1000; 20 s each
    .venv/bin/python bench/ocpp.py -n 1000 --duration-s 60
    .venv/bin/python bench/ocpp.py -n 1000 --baseline    # also paho: the ratio

``--baseline`` also runs each N with the CSMS on paho's threaded MQTT client (the library
baseline: ``python -m bench.baselines collect-ocpp --mqtt paho``, the same CSMS with paho
injected) and prints its CPU per meter value as a ratio of the command's.

Diagnostics: ``--samples-file F.csv`` writes every measured message (arrival ms, meter
timestamp ms, asset); ``--pyspy-dir D`` records the CSMS and each simulator with py-spy
(``$PYSPY``, default /tmp/pyspy/bin/py-spy) during the measured window, in py-spy's raw
(collapsed stack) format. py-spy takes CPU of its own: such a run's latencies are not the
benchmark's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench._harness import pyspy_record, stop_process
from gridflex.broker import start_broker
from gridflex.mqtt import MqttClient
from gridflex.net import free_port

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "bench-password-0123456789"
SITE = "bench"
PYSPY = os.environ.get("PYSPY", "/tmp/pyspy/bin/py-spy")


def site_toml(prefixes: list[tuple[str, int]], port: int, mqtt_url: str) -> str:
    """The site file: one EVSE asset per simulated station."""
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


class LatencyProbe:
    """Collects (arrival - meter timestamp) in ms for every telemetry message."""

    def __init__(self, url: str) -> None:
        self.lock = threading.Lock()
        self.latencies_ms: list[float] = []
        self.count = 0
        self.assets: set[str] = set()
        self.samples: list[tuple[float, int, str]] | None = None
        self.client = MqttClient(url, f"bench-ocpp-{os.getpid()}", clean_session=True)
        self.collector_online = threading.Event()
        # QoS 1, as the pipeline subscribes. Not QoS 0: Mosquitto leaves Nagle's algorithm
        # on (``set_tcp_nodelay`` defaults to false), and once a QoS 0 subscriber has sent
        # anything (its first keepalive PINGREQ) its kernel delays ACKs, so Mosquitto holds
        # each small write until the next ACK: +10 ms (p50) on every message from then on.
        # A QoS 1 subscriber's PUBACKs carry the ACKs at once.
        self.client.subscribe(f"gridflex/v1/{SITE}/evse/+/telemetry", self.on_message, qos=1)
        self.client.subscribe(f"gridflex/v1/{SITE}/collector/ocpp/status", self.on_collector)
        self.client.start()
        if not self.client.wait_connected(10):
            raise RuntimeError("bench subscriber could not connect")

    def on_message(self, _topic: str, payload: bytes) -> None:
        """Record one telemetry message's latency."""
        now_ms = time.time() * 1000
        msg = json.loads(payload)
        with self.lock:
            self.count += 1
            self.latencies_ms.append(now_ms - msg["ts_ms"])
            self.assets.add(msg["asset"])
            if self.samples is not None:
                self.samples.append((now_ms, msg["ts_ms"], msg["asset"]))

    def on_collector(self, _topic: str, payload: bytes) -> None:
        """Note when the CSMS announces itself online."""
        if json.loads(payload).get("online"):
            self.collector_online.set()

    def take(self) -> tuple[int, list[float]]:
        """Messages and latencies since the last call."""
        with self.lock:
            count, lat = self.count, self.latencies_ms
            self.count, self.latencies_ms = 0, []
        return count, lat

    def record_samples(self) -> None:
        """Keep every message's (arrival, timestamp, asset) from now on."""
        with self.lock:
            self.samples = []

    def take_samples(self) -> list[tuple[float, int, str]]:
        """The samples kept since ``record_samples``; stops keeping them."""
        with self.lock:
            samples, self.samples = self.samples or [], None
        return samples

    def close(self) -> None:
        """Disconnect."""
        self.client.stop(flush_timeout_s=0.5)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class CpuMeter:
    """CPU seconds of some processes between ``start()`` and ``stop()`` (psutil)."""

    def __init__(self, processes: dict[str, list[int]]) -> None:
        self.groups = {
            name: [psutil.Process(pid) for pid in pids] for name, pids in processes.items()
        }
        self._start: dict[str, tuple[float, float]] = {}
        self._machine_start: Any = None
        self._t0 = 0.0

    def _times(self) -> dict[str, tuple[float, float]]:
        out = {}
        for name, procs in self.groups.items():
            user = system = 0.0
            for proc in procs:
                times = proc.cpu_times()
                user += times.user
                system += times.system
            out[name] = (user, system)
        return out

    def start(self) -> None:
        """Take the first reading."""
        self._t0 = time.monotonic()
        self._machine_start = psutil.cpu_times()
        self._start = self._times()

    def stop(self) -> dict[str, float]:
        """Percent of one core per group (``{name}_user``/``{name}_sys`` too) and machine."""
        elapsed = time.monotonic() - self._t0
        end = self._times()
        machine_end = psutil.cpu_times()
        out: dict[str, float] = {}
        for name, (user, system) in end.items():
            user0, system0 = self._start[name]
            out[f"{name}_user"] = 100 * (user - user0) / elapsed
            out[f"{name}_sys"] = 100 * (system - system0) / elapsed
            out[name] = out[f"{name}_user"] + out[f"{name}_sys"]
        busy = 0.0
        for field in ("user", "nice", "system", "irq", "softirq", "steal"):
            busy += getattr(machine_end, field, 0.0) - getattr(self._machine_start, field, 0.0)
        out["machine"] = 100 * busy / elapsed  # of one core; all cores: / cpu_count
        out["other"] = out["machine"] - sum(out[name] for name in self.groups)
        return out


def run_one(
    n: int,
    *,
    sim_procs: int,
    warmup_s: float,
    settle_s: float,
    duration_s: float,
    mqtt_url: str,
    broker_pid: int | None,
    baseline: bool = False,
    samples_file: Path | None = None,
    pyspy_dir: Path | None = None,
) -> dict[str, Any]:
    """Measure one fleet size; the row's values.

    ``baseline``: the CSMS is ``bench.baselines collect-ocpp --mqtt paho`` instead of
    ``gridflex collect ocpp``.
    """
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
        cli = [python, "-m", "gridflex.cli", "--log-level=WARNING"]
        if baseline:
            command = [python, "-m", "bench.baselines", "--log-level=WARNING", "collect-ocpp"]
            command += ["--mqtt", "paho"]
        else:
            command = [*cli, "collect", "ocpp"]
        csms = subprocess.Popen(
            [*command, "--site", str(site)],
            cwd=ROOT,
            env=env,
        )
        try:
            if not probe.collector_online.wait(30):
                raise RuntimeError("the CSMS did not come online")
            for k, (prefix, count) in enumerate(prefixes):
                sim_args = ["sim", "chargers", "--count", str(count)]
                sim_args += ["--csms-url", f"ws://127.0.0.1:{port}/ocpp", "--id-prefix", prefix]
                sim_args += ["--password", PASSWORD, "--ocpp", "mix", "--seed", str(k + 1)]
                sim_args += ["--ramp-s", str(max(2.0, count / 100))]
                sims.append(subprocess.Popen([*cli, *sim_args], cwd=ROOT, env=env))
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
            time.sleep(settle_s)
            groups = {"csms": [csms.pid], "sims": [p.pid for p in sims], "bench": [os.getpid()]}
            if broker_pid is not None:
                groups["mosquitto"] = [broker_pid]
            meter = CpuMeter(groups)
            probe.take()
            if samples_file is not None:
                probe.record_samples()
            spies = []
            if pyspy_dir is not None:
                pyspy_dir.mkdir(parents=True, exist_ok=True)
                spies.append(pyspy_record(PYSPY, csms.pid, pyspy_dir / f"csms-{n}.txt", duration_s))
                for k, sim in enumerate(sims):
                    spies.append(
                        pyspy_record(PYSPY, sim.pid, pyspy_dir / f"sim{k}-{n}.txt", duration_s)
                    )
            started = time.monotonic()
            meter.start()
            time.sleep(duration_s)
            count, latencies = probe.take()
            cpu = meter.stop()
            elapsed = time.monotonic() - started
            load_1m = os.getloadavg()[0]
            rss_mb = psutil.Process(csms.pid).memory_info().rss / 1e6
            if samples_file is not None:
                with samples_file.open("w", encoding="utf-8") as out:
                    for arrival_ms, ts_ms, asset in probe.take_samples():
                        out.write(f"{arrival_ms:.3f},{ts_ms},{asset}\n")
            for spy in spies:
                spy.wait()
        finally:
            for sim in sims:
                stop_process(sim)
            code = stop_process(csms, timeout_s=30)
            probe.close()
    return {
        "stations": n,
        "client": "paho" if baseline else "asyncio",
        "msgs_per_s": count / elapsed,
        "expected_per_s": float(n),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "csms_rss_mb": rss_mb,
        "load_1m": load_1m,
        "csms_exit": code,
        **{f"{name}_cpu_pct": value for name, value in cpu.items()},
    }


def main() -> int:
    """Run the sizes asked for and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, action="append", help="stations (repeatable)")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=60.0, help="most time to get steady")
    parser.add_argument("--settle-s", type=float, default=10.0, help="wait once steady")
    parser.add_argument("--sim-procs", type=int, default=2)
    parser.add_argument(
        "--baseline", action="store_true", help="also run each N with paho (bench.baselines)"
    )
    parser.add_argument("--samples-file", type=Path, help="write every measured message")
    parser.add_argument("--pyspy-dir", type=Path, help="py-spy the CSMS and simulators")
    args = parser.parse_args()
    sizes = args.n or [200, 500, 1000]
    broker = start_broker("mosquitto")
    rows = []
    try:
        for n in sizes:
            samples_file = args.samples_file
            if samples_file is not None and len(sizes) > 1:
                samples_file = samples_file.with_name(f"{samples_file.stem}-{n}.csv")
            for baseline in (False, True) if args.baseline else (False,):
                rows.append(
                    run_one(
                        n,
                        sim_procs=args.sim_procs,
                        warmup_s=args.warmup_s,
                        settle_s=args.settle_s,
                        duration_s=args.duration_s,
                        mqtt_url=broker.url,
                        broker_pid=broker.pid,
                        baseline=baseline,
                        samples_file=samples_file,
                        pyspy_dir=args.pyspy_dir,
                    )
                )
                time.sleep(1.0)
    finally:
        broker.stop()
    cores = psutil.cpu_count() or 1
    print()
    print(
        f"OCPP CSMS benchmark: {args.duration_s:.0f} s per row, meter values every 1 s, "
        f"{args.sim_procs} simulator processes, {cores} cores; MQTT client: asyncio "
        "(gridflex collect ocpp) or paho (the baseline, bench.baselines)"
    )
    print("(CPU % of one core; machine % of all cores together)")
    print()
    print(
        "| stations | MQTT client | telemetry msg/s (expected) | p50 ms | p99 ms | max ms "
        "| CSMS CPU % (user+sys) | CSMS RSS MB | sims CPU % | Mosquitto CPU % "
        "| subscriber CPU % | other CPU % | machine CPU % | load 1 min |"
    )
    print("| ---: | :--- |" + " ---: |" * 12)
    for r in rows:
        print(
            f"| {r['stations']} | {r['client']} "
            f"| {r['msgs_per_s']:.0f} ({r['expected_per_s']:.0f}) "
            f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} "
            f"| {r['csms_cpu_pct']:.0f} ({r['csms_user_cpu_pct']:.0f}+{r['csms_sys_cpu_pct']:.0f}) "
            f"| {r['csms_rss_mb']:.0f} | {r['sims_cpu_pct']:.0f} "
            f"| {r.get('mosquitto_cpu_pct', float('nan')):.0f} | {r['bench_cpu_pct']:.0f} "
            f"| {r['other_cpu_pct']:.0f} | {r['machine_cpu_pct'] / cores:.0f} "
            f"| {r['load_1m']:.1f} |"
        )
    print_ratios(rows)
    failed = [r["stations"] for r in rows if r["csms_exit"] != 0]
    if failed:
        print(f"\nthe CSMS did not exit cleanly (code != 0) for N = {failed}", file=sys.stderr)
    return 0


def cpu_per_message_ms(row: dict[str, Any]) -> float | None:
    """The CSMS's CPU time per telemetry message, ms (None without messages)."""
    if not row["msgs_per_s"]:
        return None
    return 10 * row["csms_cpu_pct"] / row["msgs_per_s"]


def print_ratios(rows: list[dict[str, Any]]) -> None:
    """The paho baseline's CPU per message and p99 against the command's at the same N."""
    command = {r["stations"]: r for r in rows if r["client"] == "asyncio"}
    lines = []
    for r in rows:
        ours = command.get(r["stations"])
        if r["client"] == "asyncio" or ours is None:
            continue
        mine, theirs = cpu_per_message_ms(ours), cpu_per_message_ms(r)
        if not mine or theirs is None:
            continue
        lines.append(
            f"  N = {r['stations']}: paho {theirs * 1000:.0f} us CSMS CPU per meter value = "
            f"{theirs / mine:.2f} x asyncio ({mine * 1000:.0f} us); p99 {r['p99_ms']:.1f} ms "
            f"against {ours['p99_ms']:.1f} ms"
        )
    if lines:
        print("\nthe paho baseline against the command:")
        print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
