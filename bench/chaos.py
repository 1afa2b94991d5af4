"""Benchmark: chaos. A demo-sized site under load while its processes are killed and restarted.

Starts what ``gridflex demo`` starts (simulated inverters and chargers, both collectors, the
pipeline, the writer) around a Mosquitto with persistence, lets it settle, then for
``--duration-s`` kills a random process at random moments (``SIGKILL``; the broker gets a
``SIGTERM``, see below), restarts it after 0.5-2 s and times how long it takes to be back:

- a collector: its retained ``collector/{component}/status`` online again;
- the pipeline: a new ``…/summary`` (one a second);
- the writer: ``GET /api/v1/health`` answers 200;
- the broker: its port accepts connections.

Then it stops everything in data-flow order and checks from the history
(``bench/chaos_analysis.py``): per (asset, boot) no seq gap, no command applied twice,
energy registers continuous, every process back within ``--back-within-s`` (5 s). It
prints a table of the faults injected and one of the invariants, pass or fail. It asserts
nothing.

The broker is stopped with ``SIGTERM``, not killed: Mosquitto writes its persistence file
(sessions, queued messages) on a clean stop and only every ``autosave_interval`` otherwise,
so a ``SIGKILL`` loses the sessions by design of the broker, not of gridflex.

    .venv/bin/python bench/chaos.py                       # 20 inverters, 10 chargers, 120 s
    .venv/bin/python bench/chaos.py --duration-s 300 --targets pipeline,control
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._harness import spawn_part  # noqa: E402
from bench.chaos_analysis import (  # noqa: E402
    Recovery,
    double_applications,
    register_decreases,
    seq_gaps,
    verdicts,
)
from gridflex.broker import Broker, start_broker  # noqa: E402
from gridflex.demo import (  # noqa: E402
    PIPELINE_CLIENT_ID,
    SITE_ID,
    DemoPlan,
    plan_parts,
    site_toml,
    stop_order,
)
from gridflex.history import connect  # noqa: E402
from gridflex.mqtt import MqttClient, open_session  # noqa: E402
from gridflex.net import free_port, free_port_block, wait_for_port  # noqa: E402
from pipelines.flow import pipeline_filters  # noqa: E402

TARGETS = ("collect-modbus", "collect-ocpp", "pipeline", "control", "broker")


class Watcher:
    """The newest collector statuses and summary, as an integrator sees them."""

    def __init__(self, url: str) -> None:
        self.online_ms: dict[str, int] = {}
        self.summary_ms = 0
        self.client = MqttClient(url, f"chaos-watch-{secrets.token_hex(3)}", clean_session=True)
        self.client.subscribe(f"gridflex/v1/{SITE_ID}/collector/+/status", self._on_collector)
        self.client.subscribe(f"gridflex/v1/{SITE_ID}/summary", self._on_summary)
        self.client.start()

    def _on_collector(self, topic: str, payload: bytes) -> None:
        body = json.loads(payload or b"{}")
        if body.get("online"):
            self.online_ms[topic.split("/")[4]] = int(body["ts_ms"])

    def _on_summary(self, _topic: str, payload: bytes) -> None:
        self.summary_ms = max(self.summary_ms, int(json.loads(payload or b"{}").get("ts_ms", 0)))


def _back(target: str, since_ms: int, watcher: Watcher, plan: DemoPlan, broker: Broker) -> bool:
    if target.startswith("collect-"):
        return watcher.online_ms.get(target.removeprefix("collect-"), 0) >= since_ms
    if target == "pipeline":
        return watcher.summary_ms >= since_ms
    if target == "control":
        try:
            with urllib.request.urlopen(f"{plan.api_url}/health", timeout=0.5) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False
    return wait_for_port(broker.host, broker.port, timeout_s=0.1)


def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    data_dir = Path(tempfile.mkdtemp(prefix="gridflex-chaos-"))
    logs = data_dir / "logs"
    logs.mkdir()
    store = data_dir / "mosquitto"
    store.mkdir()
    broker = start_broker(persistence_dir=store)
    plan = DemoPlan(
        args.inverters,
        args.chargers,
        free_port_block(args.inverters),
        free_port(),
        broker.url,
        api_port=free_port(),
        api_token=secrets.token_urlsafe(24),
    )
    site_file = data_dir / "site.toml"
    site_file.write_text(site_toml(plan), encoding="utf-8")
    for topic_filter in pipeline_filters(SITE_ID):
        open_session(broker.url, f"{PIPELINE_CLIENT_ID}-0", topic_filter)
    parts = {p.name: p for p in plan_parts(plan, site_file)}
    procs = {name: spawn_part(part, logs) for name, part in parts.items()}
    watcher = Watcher(broker.url)
    print(f"site in {data_dir}; settling {args.settle_s:.0f} s", flush=True)
    time.sleep(args.settle_s)

    recoveries: list[Recovery] = []
    start = time.monotonic()
    while time.monotonic() - start < args.duration_s:
        time.sleep(rng.expovariate(1.0 / args.every_s))
        at_s = time.monotonic() - start
        if at_s >= args.duration_s:
            break
        target = rng.choice(args.targets)
        if target == "broker":
            broker.stop()  # SIGTERM: Mosquitto saves its sessions (module docstring)
        else:
            procs[target].send_signal(signal.SIGKILL)
            procs[target].wait()
        time.sleep(rng.uniform(0.5, 2.0))
        restarted = time.monotonic()
        since_ms = time.time_ns() // 1_000_000
        if target == "broker":
            broker = start_broker(port=broker.port, persistence_dir=store)
        else:
            procs[target] = spawn_part(parts[target], logs)
        back_after_s: float | None = None
        while time.monotonic() - restarted < 30.0:
            if _back(target, since_ms, watcher, plan, broker):
                back_after_s = time.monotonic() - restarted
                break
            time.sleep(0.05)
        recoveries.append(Recovery(target, at_s, back_after_s))
        shown = "never" if back_after_s is None else f"{back_after_s:.1f} s"
        print(f"  {at_s:6.1f} s  {target:<15} back after {shown}", flush=True)

    time.sleep(args.drain_s)
    for part in stop_order(list(parts.values())):
        proc = procs[part.name]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    watcher.client.stop()
    broker.stop()
    report(data_dir, recoveries, args)


def report(data_dir: Path, recoveries: list[Recovery], args: argparse.Namespace) -> None:
    """Read the history back and print the faults and the invariants."""
    con = connect(data_dir)
    telemetry: list[Any] = con.execute(
        "select asset, boot, seq, energy_import_wh, energy_export_wh from telemetry"
    ).fetchall()
    acks: list[Any] = con.execute("select command_id, result from acks").fetchall()
    gaps = seq_gaps((a, b, s) for a, b, s, _, _ in telemetry)
    rows = verdicts(
        gaps=gaps,
        doubles=double_applications(acks),
        decreases=register_decreases(telemetry),
        recoveries=recoveries,
        back_within_s=args.back_within_s,
        readings=len(telemetry),
    )
    print()
    print("| target | faults | back p50 / max s |")
    print("| --- | ---: | ---: |")
    for target in sorted({r.target for r in recoveries}):
        times = sorted(r.back_after_s or float("inf") for r in recoveries if r.target == target)
        print(f"| {target} | {len(times)} | {times[len(times) // 2]:.1f} / {times[-1]:.1f} |")
    print()
    print("| invariant | measured | |")
    print("| --- | --- | --- |")
    for name, measured, passed in rows:
        print(f"| {name} | {measured} | {'pass' if passed else 'FAIL'} |")
    for gap in gaps[:10]:
        print(f"  gap: {gap.asset} boot {gap.boot} seq {gap.first}..{gap.last}")
    print(f"\nhistory and logs in {data_dir}")


def main() -> int:
    """Parse the options, run the campaign, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inverters", type=int, default=20)
    parser.add_argument("--chargers", type=int, default=10)
    parser.add_argument("--duration-s", type=float, default=120.0, help="time faults go in")
    parser.add_argument("--every-s", type=float, default=8.0, help="mean time between faults")
    parser.add_argument("--settle-s", type=float, default=15.0, help="before the first fault")
    parser.add_argument("--drain-s", type=float, default=10.0, help="after the last fault")
    parser.add_argument("--back-within-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--targets",
        type=lambda text: [t for t in text.split(",") if t],
        default=list(TARGETS),
        help=f"comma-separated, of {', '.join(TARGETS)}",
    )
    args = parser.parse_args()
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"--targets: unknown {', '.join(sorted(unknown))}")
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
