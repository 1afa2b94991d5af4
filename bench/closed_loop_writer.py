"""Benchmark: the writer alone, bursts of one command per asset, as at a frequency step.

The writer's part of ``bench/closed_loop.py``'s tail without the collector and the
pipeline: Mosquitto, N simulated SunSpec inverters (``gridflex sim inverters``, 500 per
process, 50.00 Hz) and ``gridflex control`` on one site file, each its own process. This
script publishes the commands itself: after a warm-up burst (the writer connects to and
discovers every device), ``--bursts`` bursts of N commands, one per asset, spread over
``--spread-ms`` (200: one poll round, as the pipeline issues them at a step), every burst
alternating the setpoint between -1 and +1 kW, ``--gap-s`` apart. Per burst it waits for
the N acks. Meanwhile it publishes every asset's reading every ``--telemetry-ms`` (200,
SoC 50 %: the writer takes the SoC from telemetry, as in the closed loop, and receives
the collector's 5,000 readings a second at N = 1,000); ``--telemetry-ms 0``: one reading
per asset just before each burst (the CPU per command is then the commands' alone).

Printed per N: the acks' ``latency_from_issued_ms`` (the command's ``issued_ms``, stamped
here just before its publish, to the writer's confirmed read-back) p50 / p99 / max over
all bursts, the time from a burst's first command to its last ack, and the writer's CPU
time per command (psutil, user + system, over the bursts: robust to other load on the
machine, unlike the latencies). It asserts nothing.

    .venv/bin/python bench/closed_loop_writer.py --assets 500,1000
    PYSPY=/tmp/pyspy/bin/py-spy .venv/bin/python bench/closed_loop_writer.py --pyspy-dir /tmp/s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench._harness import fmt, percentile, pyspy_record, stop_process
from bench.closed_loop import PYSPY, SITE, _gridflex, start_simulators
from bench.closed_loop_analysis import profile_csv, site_toml
from gridflex.broker import start_broker
from gridflex.broker_config import BrokerLimits
from gridflex.contract import DispatchCommand
from gridflex.contract.topics import command_topic
from gridflex.mqtt_asyncio import AsyncMqttClient

ACK_FILTER = f"gridflex/v1/{SITE}/dispatch/+/ack"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Bursts:
    """Publishes the bursts and collects their acks."""

    def __init__(self, client: AsyncMqttClient, assets: list[str]) -> None:
        self.client = client
        self.assets = assets
        self.acks: dict[str, dict[str, Any]] = {}
        self.waiting: set[str] = set()
        self.done = asyncio.Event()
        self.streaming = False

    def on_ack(self, _topic: str, payload: bytes) -> None:
        ack = json.loads(payload)
        command_id = ack.get("command_id")
        if command_id in self.waiting:
            self.waiting.discard(command_id)
            self.acks[command_id] = ack
            if not self.waiting:
                self.done.set()

    def readings(self, assets: list[str]) -> None:
        """Publish a reading of each of ``assets`` (SoC 50 %), as the collector does."""
        now = _now_ms()
        for asset in assets:
            reading = (
                f'{{"schema":"telemetry/1","site":"{SITE}","asset":"{asset}",'
                f'"ts_ms":{now},"power_w":0.0,"soc_pct":50.0}}'
            )
            self.client.publish(
                f"gridflex/v1/{SITE}/inverter/{asset}/telemetry", reading.encode(), qos=0
            )

    async def telemetry(self, interval_s: float) -> None:
        """Every asset's reading every ``interval_s``, in slices every 5 ms."""
        slices = max(1, round(interval_s / 0.005))
        per_slice = -(-len(self.assets) // slices)
        while True:
            for start in range(0, len(self.assets), per_slice):
                self.readings(self.assets[start : start + per_slice])
                await asyncio.sleep(0.005)

    async def warm_up(self, timeout_s: float) -> None:
        """Burst 0, its missing commands again every 5 s until each is acked.

        The writer may not have subscribed yet (its start-up takes seconds on a busy
        machine): what it did not receive is published again (the same command ids).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self.burst(0, 200.0, 5.0, only=set(self.waiting) or None)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise

    async def burst(
        self, k: int, spread_ms: float, timeout_s: float, *, only: set[str] | None = None
    ) -> float:
        """Publish burst ``k``; the time from its first command to its last ack, s.

        ``only``: publish just these command ids of the burst (the warm-up's retries).
        """
        setpoint_w = -1_000.0 if k % 2 else 1_000.0
        ids = [f"burst{k}-{a}" for a in self.assets]
        self.waiting = set(ids) if only is None else set(only)
        self.done.clear()
        slices = max(1, round(spread_ms / 5))  # one slice of the fleet every 5 ms
        per_slice = -(-len(self.assets) // slices)
        t0 = time.monotonic()
        for start in range(0, len(self.assets), per_slice):
            now = _now_ms()
            for asset, command_id in zip(
                self.assets[start : start + per_slice], ids[start : start + per_slice], strict=True
            ):
                if command_id not in self.waiting:
                    continue
                command = DispatchCommand(
                    site=SITE,
                    asset=asset,
                    ts_ms=now,
                    seq=k + 1,
                    command_id=command_id,
                    issued_ms=now,
                    setpoint_w=setpoint_w,
                    valid_until_ms=now + 5_000,
                    mode="droop",
                    reason="bench burst",
                )
                self.client.publish(command_topic(SITE, asset), command.to_json(), qos=1)
            await asyncio.sleep(0.005)
        try:
            await asyncio.wait_for(self.done.wait(), timeout_s)
        except TimeoutError:
            missing = sorted(self.waiting)
            raise RuntimeError(
                f"burst {k}: {len(missing)} acks missing after {timeout_s:.0f} s: {missing[:5]}"
            ) from None
        return time.monotonic() - t0


@dataclass(frozen=True)
class Row:
    """One N's figures (see the module docstring)."""

    warm: list[str]
    p50: float | None
    p99: float | None
    max: float | None
    span_ms: float
    cpu_us: float
    results: dict[str, int]


async def _drive(url: str, n: int, control_pid: int, args: argparse.Namespace) -> Row:
    client = AsyncMqttClient(url, "bench-writer-bursts", clean_session=True)
    bursts = _Bursts(client, [f"inv{i:05d}" for i in range(n)])
    client.subscribe(ACK_FILTER, bursts.on_ack, qos=1)
    await client.start()
    if not await client.wait_connected(10):
        raise RuntimeError(f"no broker at {url}")
    await asyncio.sleep(1.0)  # the writer subscribed (it started before this client)
    readings = None
    if args.telemetry_ms > 0:
        bursts.streaming = True
        readings = asyncio.create_task(bursts.telemetry(args.telemetry_ms / 1000))
    await bursts.warm_up(180.0)  # the writer's connections and discovery
    warm = bursts.acks
    bursts.acks = {}
    await asyncio.sleep(args.gap_s)
    control = psutil.Process(control_pid)
    spy = None
    if args.pyspy_dir is not None:
        args.pyspy_dir.mkdir(parents=True, exist_ok=True)
        out = args.pyspy_dir / f"control-bursts-{n}.txt"
        spy = pyspy_record(PYSPY, control_pid, out, args.bursts * (args.gap_s + 0.5))
    spans = []
    cpu_s = 0.0
    for k in range(1, args.bursts + 1):
        if not bursts.streaming:  # one fresh reading each, just before
            bursts.readings(bursts.assets)
            await asyncio.sleep(0.5)
        cpu0 = sum(control.cpu_times()[:2])
        spans.append(await bursts.burst(k, args.spread_ms, 60.0))
        cpu_s += sum(control.cpu_times()[:2]) - cpu0
        await asyncio.sleep(args.gap_s)
    if readings is not None:
        readings.cancel()
    await client.stop()
    if spy is not None:
        spy.wait()
    latencies = [
        float(a["latency_from_issued_ms"])
        for a in bursts.acks.values()
        if a.get("latency_from_issued_ms") is not None
    ]
    results: dict[str, int] = {}
    for a in bursts.acks.values():
        results[str(a["result"])] = results.get(str(a["result"]), 0) + 1
    commands = n * args.bursts
    return Row(
        warm=sorted({str(a["result"]) for a in warm.values()}),
        p50=percentile(latencies, 0.5),
        p99=percentile(latencies, 0.99),
        max=max(latencies, default=None),
        span_ms=1000 * max(spans),
        cpu_us=1e6 * cpu_s / commands,
        results=results,
    )


def run(n: int, args: argparse.Namespace) -> Row:
    """One N: start the broker, the simulators and the writer, drive the bursts, stop."""
    sims: list[subprocess.Popen[bytes]] = []
    control: subprocess.Popen[bytes] | None = None
    limits = BrokerLimits(max_inflight_messages=args.broker_inflight)
    with (
        tempfile.TemporaryDirectory(prefix="gridflex-writer-") as tmp,
        start_broker(limits=limits) as broker,
    ):
        profile = Path(tmp) / "frequency.csv"
        profile.write_text(profile_csv([(0.0, 50.0)]), "utf-8")
        try:
            sims, ports, _groups = start_simulators(n, profile)
            site = Path(tmp) / "site.toml"
            site.write_text(
                site_toml(site=SITE, mqtt_url=broker.url, data_dir=Path(tmp), ports=ports),
                encoding="utf-8",
            )
            control = _gridflex("control", "--site", str(site), "--no-api", *args.control_args)
            time.sleep(2.0)
            return asyncio.run(_drive(broker.url, n, control.pid, args))
        finally:
            if control is not None:
                stop_process(control)
            for p in sims:
                stop_process(p)


def main() -> None:
    """Parse the arguments, run each N, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", default="1000", help="N,N,...")
    parser.add_argument("--bursts", type=int, default=6, help="measured bursts per N")
    parser.add_argument("--spread-ms", type=float, default=200.0, help="one burst's spread")
    parser.add_argument(
        "--telemetry-ms", type=float, default=200.0, help="each asset's reading every ... ms"
    )
    parser.add_argument(
        "--broker-inflight",
        type=int,
        default=BrokerLimits().max_inflight_messages,
        help="Mosquitto's max_inflight_messages (QoS 1 sent to a client before its PUBACKs)",
    )
    parser.add_argument("--gap-s", type=float, default=2.0, help="pause after each burst")
    parser.add_argument(
        "--control-args", nargs="*", default=[], help="more arguments for gridflex control"
    )
    parser.add_argument(
        "--pyspy-dir", type=Path, help="py-spy the writer over the bursts into this folder"
    )
    args = parser.parse_args()
    rows = []
    for n in (int(x) for x in args.assets.split(",")):
        r = run(n, args)
        results = " ".join(f"{k} {v}" for k, v in sorted(r.results.items()))
        rows.append(
            f"| {n:5d} | {fmt(r.p50, '.0f')} / {fmt(r.p99, '.0f')} / {fmt(r.max, '.0f')} "
            f"| {r.span_ms:.0f} | {r.cpu_us:.0f} | {results} |"
        )
        print(f"N={n}: warm-up acks {r.warm}", flush=True)
    print(
        "\n|     N | ack latency from issued p50 / p99 / max ms | burst to last ack ms "
        "| writer CPU µs / command | acks |"
    )
    print("| ----: | ---: | ---: | ---: | --- |")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
