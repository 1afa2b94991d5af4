"""What the benchmark scripts share: processes, CPU accounting, the pipeline, telemetry, cells."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from gridflex.contract import telemetry_topic
from gridflex.demo import Part
from gridflex.mqtt import open_session
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.net import free_port_block, wait_for_port

__all__ = [
    "INTERVAL_S",
    "ROOT",
    "asset_id",
    "busiest_processes",
    "busy_s",
    "fmt",
    "machine_busy_s",
    "percentile",
    "pipeline_site_toml",
    "print_busiest_processes",
    "publish_telemetry",
    "pyspy_record",
    "rss_mib",
    "spawn_part",
    "start_pipeline",
    "stop_process",
    "tree",
]

ROOT = Path(__file__).resolve().parents[1]
#: Telemetry period of every simulated inverter (5 Hz).
INTERVAL_S = 0.2


def start_simulators(
    n: int, sims: list[subprocess.Popen[bytes]], *, per_proc: int = 500, seed: int = 0
) -> list[int]:
    """Start N simulated inverters, ``per_proc`` per simulator process; return their ports.

    Each process is appended to ``sims`` as it starts, so the caller's clean-up stops those
    that did start when a later one fails (``RuntimeError``).
    """
    ports: list[int] = []
    for k in range(-(-n // per_proc)):
        count = min(per_proc, n - k * per_proc)
        base = free_port_block(count)
        ports += range(base, base + count)
        argv = ["sim", "inverters", "--count", str(count), "--base-port", str(base)]
        argv += ["--seed", str(seed + k)]
        sims.append(
            subprocess.Popen(
                [sys.executable, "-m", "gridflex.cli", "--log-level=ERROR", *argv],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        )
        if not wait_for_port("127.0.0.1", base + count - 1, timeout_s=60):
            raise RuntimeError(f"simulator {k} did not start")
    return ports


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int:
    """SIGTERM ``proc`` (by PID), wait up to ``timeout_s``, then kill; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def spawn_part(part: Part, logs: Path) -> subprocess.Popen[bytes]:
    """Start ``gridflex {part.argv}`` in its own session, its output to ``logs/{name}.log``."""
    log = (logs / f"{part.name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "gridflex.cli", "--log-level=WARNING", *part.argv],
        cwd=ROOT,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )


def tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and its descendants (those alive now)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def busy_s(procs: list[psutil.Process]) -> float:
    """CPU seconds used so far by ``procs`` (a process that has gone counts 0)."""
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def rss_mib(procs: list[psutil.Process]) -> float:
    """Resident memory of ``procs`` together, MiB."""
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def busiest_processes(sample_s: float = 1.0, top: int = 3) -> list[tuple[float, str]]:
    """The ``top`` processes by CPU % over ``sample_s`` (this one excluded)."""
    procs = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if p.pid != os.getpid()]
    for proc in procs:
        try:
            proc.cpu_percent(None)
        except psutil.Error:
            continue
    time.sleep(sample_s)
    usage = []
    for proc in procs:
        try:
            pct = proc.cpu_percent(None)
            cmd = " ".join(proc.info["cmdline"] or [proc.info["name"] or "?"])
        except psutil.Error:
            continue
        usage.append((pct, f"{proc.pid} {cmd[:70]}"))
    return sorted(usage, reverse=True)[:top]


def print_busiest_processes() -> None:
    """Print the machine's busiest processes before a benchmark's runs (its noise floor)."""
    print("busiest processes before the runs (CPU % over 1 s, 100 = one core):")
    for pct, proc in busiest_processes():
        print(f"  {pct:5.0f}  {proc}")


def fmt(value: float | None, spec: str) -> str:
    """A table cell: ``value`` formatted, or ``-`` when there is none."""
    return "-" if value is None else format(value, spec)


def pyspy_record(
    binary: str, pid: int, out: Path, duration_s: float, *extra: str
) -> subprocess.Popen[bytes]:
    """py-spy ``pid`` at 100 Hz for ``duration_s`` into ``out`` (raw collapsed stacks)."""
    cmd = [binary, "record", "--nonblocking", "-r", "100", "-f", "raw", "-o", str(out), *extra]
    cmd += ["-p", str(pid), "-d", str(max(1, int(duration_s)))]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``values``, or None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- the pipeline


def asset_id(i: int) -> str:
    """The id of the ``i``-th simulated inverter."""
    return f"inv{i:05d}"


def pipeline_site_toml(site: str, mqtt_url: str, data_dir: Path) -> str:
    """The site file of a bench pipeline: broker, a deep outgoing queue, the history folder."""
    return (
        f'[site]\nid = "{site}"\n\n[mqtt]\nurl = "{mqtt_url}"\nqueue_limit = 1000000\n\n'
        f'[history]\ndir = "{data_dir}"\n'
    )


def start_pipeline(
    mqtt_url: str,
    site: str,
    site_file: Path,
    *,
    pythonpath: list[Path] | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Open the pipeline's persistent session, then start ``gridflex pipeline`` on ``site_file``.

    The session (client id ``gridflex-pipeline-{site}``; its receiver connects as ``...-0``)
    exists before this returns, so nothing published afterwards is missed while the
    pipeline imports and starts (~5 s). ``pythonpath`` goes before the repository on
    ``PYTHONPATH`` (a diagnostic ``sitecustomize``, say); ``env`` adds environment variables.
    """
    client_id = f"gridflex-pipeline-{site}"
    open_session(mqtt_url, f"{client_id}-0", f"gridflex/v1/{site}/+/+/telemetry")
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "gridflex.cli", "--log-level=WARNING", "pipeline"),
            *("--site", str(site_file), "--client-id", client_id),
        ],
        cwd=ROOT,
        env={
            **os.environ,
            **(env or {}),
            "PYTHONPATH": os.pathsep.join(map(str, [*(pythonpath or []), ROOT])),
        },
    )


# --------------------------------------------------------------------------- telemetry


async def publish_telemetry(
    url: str,
    site: str,
    n: int,
    duration_s: float,
    *,
    freq_hz: Callable[[float], float],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Send ``telemetry/1`` for ``n`` inverters every 200 ms for ``duration_s``; counts.

    QoS 1 on the native client, spread over the interval (every 4 ms a 50th of the fleet:
    the spread a collector's Ticker gives). ``ts_ms`` is the wall clock when the message is
    published; ``freq_hz(seconds since the start)`` gives each message's frequency;
    ``extra`` fields are added to every payload.
    """
    client = AsyncMqttClient(url, f"bench-pub-{os.getpid()}", max_inflight=0)
    await client.start()
    if not await client.wait_connected(10):
        raise RuntimeError(f"publisher: no broker at {url}")
    rng = random.Random(1)
    assets = [asset_id(i) for i in range(n)]
    topics = [telemetry_topic(site, "inverter", a) for a in assets]
    boot = f"bench{os.getpid()}"
    fields = dict(extra or {})
    loop = asyncio.get_running_loop()
    start_s = loop.time()
    slots = 50
    sent = 0
    k = 0
    while loop.time() - start_s < duration_s:
        due_s = start_s + k * INTERVAL_S / slots
        await asyncio.sleep(max(0.0, due_s - loop.time()))
        seq = k // slots + 1
        for i in range(k % slots, n, slots):
            payload = json.dumps(
                {
                    "schema": "telemetry/1",
                    "site": site,
                    "asset": assets[i],
                    "kind": "inverter",
                    "ts_ms": time.time_ns() // 1_000_000,
                    "seq": seq,
                    "boot": boot,
                    "power_w": round(rng.uniform(-5000, 5000), 1),
                    "freq_hz": freq_hz(due_s - start_s),
                    "soc_pct": 50.0,
                    "energy_import_wh": 1000.0 + seq,
                    "energy_export_wh": 2000.0 + seq,
                    **fields,
                }
            ).encode()
            client.publish(topics[i], payload)
            sent += 1
        k += 1
    await client.flush(30)
    stats = client.stats.as_dict()
    await client.stop()
    return {"sent": sent, "acknowledged": stats["acknowledged"], "dropped": stats["dropped"]}
