"""Benchmark: fuzzing. Malformed inputs to a running site while valid traffic flows on.

Starts what ``gridflex demo`` starts (simulated inverters and chargers, both collectors,
the pipeline, ``gridflex control`` with its REST API) around a Mosquitto on loopback, plus
one more charging station in the site file (``CSFUZZ``) that no simulator plays: the
campaign logs in as that station. Every inverter is reached through a proxy in this
process, so the Modbus collector (and control's writes) go through it. After
``--settle-s`` and a ``--window-s`` of valid traffic alone, ``-n`` malformed inputs
(default 100,000) go in, mixed across the targets (``bench/fuzz_inputs.py``):

- **mqtt**: payloads on every topic a gridflex process subscribes to (telemetry, status,
  command, ack, the CSMS's setpoint requests and results, the CSMS's presence);
- **ocpp**: frames to the CSMS over the station's WebSocket (broken payloads of the
  actions the CSMS handles, unknown actions, the wrong shapes, not JSON, binary, deep,
  oversized); every 50 frames a Heartbeat waits for its answer;
- **modbus**: the inverter proxies mangle replies to the collector's polls (another
  transaction id or unit, not Modbus TCP, exception codes, truncated, garbage) until the
  quota is reached;
- **http**: requests to the REST API with the token, a wrong one or none.

It counts the answers (CALLERRORs by code, HTTP statuses) and the dead letters (by the
topic they name: ``ocpp/...`` from the CSMS's frames, the MQTT topic otherwise), watches
that no process exits, then stops everything, reads the history and prints two tables:
per target (inputs, crashes, dead letters, CALLERRORs, HTTP 4xx/5xx) and valid traffic
(telemetry rows and acks into the history per second, before vs during). Exit status 1
when a process died, the API answered 5xx (or 2xx without the token) or the CSMS answered
``InternalError`` (a handler raised).

Modbus inputs come at the poll rate, not at ``--rate``: the collector reads each inverter
five times a second and a mangled reply costs that device a retry a second later, so
Modbus gets 1 % of the inputs (1,000 of 100,000, a few minutes at 10 inverters).

    .venv/bin/python bench/fuzz.py -n 5000
    .venv/bin/python bench/fuzz.py                # 100,000 inputs
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import http.client
import json
import multiprocessing
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from bench._harness import spawn_part, stop_process  # noqa: E402
from bench.fuzz_inputs import (  # noqa: E402
    SHARES,
    Tally,
    Traffic,
    http_request,
    mangle_reply,
    mqtt_input,
    ocpp_frame,
    quotas,
    rate_table,
    split_frames,
    table,
)
from gridflex.broker import start_broker  # noqa: E402
from gridflex.contract import DeadLetter  # noqa: E402
from gridflex.demo import (  # noqa: E402
    PIPELINE_CLIENT_ID,
    SITE_ID,
    DemoPlan,
    plan_parts,
    site_toml,
    stop_order,
)
from gridflex.history import connect as history  # noqa: E402
from gridflex.mqtt import open_session  # noqa: E402
from gridflex.mqtt_asyncio import AsyncMqttClient  # noqa: E402
from gridflex.net import free_port, free_port_block  # noqa: E402
from pipelines.flow import pipeline_filters  # noqa: E402

FUZZ_STATION = "CSFUZZ"
FUZZ_PASSWORD = "fuzz-password-0123456789"
#: Frames between two Heartbeats that wait for their answer (keeps the CSMS's queue short).
SYNC_EVERY = 50


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Campaign:
    """The counters of a running campaign, shared by its tasks."""

    def __init__(self, args: argparse.Namespace, token: str) -> None:
        self.args = args
        self.token = token
        self.rng = random.Random(args.seed)
        self.quota = quotas(args.n)
        self.tallies = {target: Tally() for target in SHARES}
        self.mangling = False
        #: Modbus replies passed on unchanged (valid traffic through the proxies).
        self.relayed = 0
        #: Replies relayed in each window, and the window's length in seconds.
        self.relayed_in: dict[str, tuple[int, float]] = {}
        self._connections: set[asyncio.Task[None]] = set()
        self.baseline_dead: Counter[str] = Counter()
        self.counting_dead = False

    # ---------------------------------------------------------------- dead letters

    def on_dead_letter(self, _topic: str, payload: bytes) -> None:
        """Count a dead letter under the target whose input it was."""
        try:
            letter = DeadLetter.model_validate_json(payload)
        except ValueError:
            return
        target = "ocpp" if (letter.topic or "").startswith("ocpp/") else "mqtt"
        if self.counting_dead:
            self.tallies[target].dead_letters += 1
        else:
            self.baseline_dead[target] += 1

    # ---------------------------------------------------------------- MQTT

    async def mqtt(self, url: str, assets: list[tuple[str, str]]) -> None:
        """Publish the MQTT quota at the MQTT share of ``--rate``."""
        client = AsyncMqttClient(url, f"fuzz-mqtt-{secrets.token_hex(3)}", queue_limit=1_000_000)
        await client.start()
        await client.wait_connected(10)
        tally, quota = self.tallies["mqtt"], self.quota["mqtt"]
        period_s = 1.0 / (self.args.rate * SHARES["mqtt"])
        start = time.monotonic()
        while tally.sent < quota:
            topic, payload = mqtt_input(self.rng, SITE_ID, assets, _now_ms())
            client.publish(topic, payload, qos=1)
            tally.note(f"sent on .../{topic.rsplit('/', 1)[-1]}")
            tally.sent += 1
            await _pace(start, tally.sent, period_s)
        await client.flush(60)
        tally.note(f"PUBACK {client.stats.as_dict()['acknowledged']}")
        await client.stop()

    # ---------------------------------------------------------------- OCPP

    async def ocpp(self, url: str) -> None:
        """Send the OCPP quota as station ``CSFUZZ``; reconnect when the CSMS hangs up."""
        tally, quota = self.tallies["ocpp"], self.quota["ocpp"]
        period_s = 1.0 / (self.args.rate * SHARES["ocpp"])
        auth = base64.b64encode(f"{FUZZ_STATION}:{FUZZ_PASSWORD}".encode()).decode()
        start = time.monotonic()
        while tally.sent < quota:
            try:
                async with connect(
                    f"{url}/{FUZZ_STATION}",
                    subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                    additional_headers={"Authorization": f"Basic {auth}"},
                    max_size=None,
                    open_timeout=30,
                ) as ws:
                    await self._ocpp_session(ws, tally, quota, start, period_s)
            except (ConnectionClosed, OSError, TimeoutError) as exc:
                tally.note(f"connection closed by the CSMS ({type(exc).__name__})")
                await asyncio.sleep(0.5)

    async def _ocpp_session(
        self, ws: ClientConnection, tally: Tally, quota: int, start: float, period_s: float
    ) -> None:
        synced: dict[str, asyncio.Event] = {}

        async def read() -> None:
            async for message in ws:
                try:
                    frame = json.loads(message)
                except ValueError:
                    tally.note("not JSON from the CSMS")
                    continue
                if not isinstance(frame, list) or len(frame) < 2:
                    continue
                if frame[0] == 4:
                    tally.note(f"CALLERROR {frame[2]}")
                elif frame[0] == 3 and frame[1] in synced:
                    synced.pop(frame[1]).set()
                elif frame[0] == 3:
                    tally.note("CALLRESULT")

        reader = asyncio.create_task(read())
        try:
            while tally.sent < quota:
                await ws.send(ocpp_frame(self.rng, tally.sent))
                tally.sent += 1
                if tally.sent % SYNC_EVERY == 0:
                    uid = f"sync-{tally.sent}"
                    synced[uid] = event = asyncio.Event()
                    await ws.send(json.dumps([2, uid, "Heartbeat", {}]))
                    async with asyncio.timeout(60):
                        await event.wait()
                await _pace(start, tally.sent, period_s)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await reader

    # ---------------------------------------------------------------- Modbus

    async def proxy(self, listen_port: int, device_port: int) -> asyncio.Server:
        """A TCP proxy to one simulated inverter that mangles replies while ``mangling``."""

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", device_port)
            except OSError:
                writer.close()
                return
            pipes = {
                asyncio.create_task(_pipe(reader, up_writer)),
                asyncio.create_task(self._replies(up_reader, writer)),
            }
            self._connections |= pipes
            try:  # either side closing ends both
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in pipes:
                    task.cancel()
                self._connections -= pipes
                up_writer.close()
                writer.close()

        return await asyncio.start_server(serve, "127.0.0.1", listen_port)

    async def _replies(self, device: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        buffer = bytearray()
        tally = self.tallies["modbus"]
        with contextlib.suppress(OSError):
            while data := await device.read(65_536):
                buffer += data
                for frame in split_frames(buffer):
                    mangle = (
                        self.mangling
                        and tally.sent < self.quota["modbus"]
                        and len(frame) >= 8
                        and self.rng.random() < self.args.mangle
                    )
                    if mangle:
                        tally.sent += 1
                    else:
                        self.relayed += 1
                    client.write(mangle_reply(self.rng, frame) if mangle else frame)
                await client.drain()

    async def modbus(self) -> None:
        """Mangle replies until the Modbus quota is reached."""
        self.mangling = True
        while self.tallies["modbus"].sent < self.quota["modbus"]:
            await asyncio.sleep(0.2)
        self.mangling = False

    # ---------------------------------------------------------------- HTTP

    async def http(self, port: int) -> None:
        """Send the HTTP quota from a process of its own (blocking I/O, off this loop)."""
        tally = self.tallies["http"]
        rate = self.args.rate * SHARES["http"]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            job = functools.partial(
                _send_http,
                port=port,
                token=self.token,
                quota=self.quota["http"],
                rate=rate,
                seed=self.args.seed + 1,
                budget_s=self.args.max_duration_s,
            )
            sent, answers = await asyncio.get_running_loop().run_in_executor(pool, job)
        tally.sent += sent
        tally.answers.update(answers)


def _send_http(
    *, port: int, token: str, quota: int, rate: float, seed: int, budget_s: float
) -> tuple[int, Counter[str]]:
    """Send ``quota`` requests at ``rate`` over one keep-alive connection (in a process)."""
    tally = Tally()
    rng = random.Random(seed)
    conn = _http_connection(port)
    start = time.monotonic()
    while tally.sent < quota and time.monotonic() - start < budget_s:
        request = http_request(rng, token)
        try:
            conn.request(request.method, request.path, request.body, request.headers)
            answer = conn.getresponse()
            answer.read()
            tally.note(f"HTTP {answer.status}")
            if not request.authorized and answer.status < 300:  # a guarded route ran
                tally.note(f"ACCEPTED WITHOUT THE TOKEN: HTTP {answer.status}")
        except (OSError, http.client.HTTPException) as exc:
            tally.note(f"HTTP connection error ({type(exc).__name__})")
            conn.close()
            conn = _http_connection(port)
        tally.sent += 1
        delay_s = start + tally.sent / rate - time.monotonic()
        if delay_s > 0:
            time.sleep(delay_s)
    conn.close()
    return tally.sent, tally.answers


class _NoDelayConnection(http.client.HTTPConnection):
    """Without Nagle's delay on our side: headers and body go in two writes."""

    def connect(self) -> None:
        """Connect (also when ``http.client`` reconnects by itself), then TCP_NODELAY."""
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _http_connection(port: int) -> http.client.HTTPConnection:
    return _NoDelayConnection("127.0.0.1", port, timeout=30)


async def _pace(start: float, sent: int, period_s: float) -> None:
    delay_s = start + sent * period_s - time.monotonic()
    if delay_s > 0:
        await asyncio.sleep(delay_s)
    elif sent % 20 == 0:
        await asyncio.sleep(0)  # behind: still let the other tasks run


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65_536):
            writer.write(data)
            await writer.drain()


def _fuzz_station_toml() -> str:
    return (
        f'\n[[assets]]\nid = "cs-fuzz"\nkind = "evse"\nstation_id = "{FUZZ_STATION}"\n'
        f'password = "{FUZZ_PASSWORD}"\nmax_charge_w = 11000\nmax_discharge_w = 11000\n'
    )


def _health(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def _traffic(data_dir: Path, windows: dict[str, tuple[int, int]]) -> dict[str, Traffic]:
    """Valid telemetry rows and acks per window (the fuzzer's own boot and ids left out)."""
    con = history(data_dir)
    result = {}
    for name, (lo, hi) in windows.items():
        telemetry = con.execute(
            "select count(*) from telemetry where ts_ms between ? and ? "
            "and boot not like 'fuzz%' and asset not in ('ghost', 'cs-fuzz')",
            [lo, hi],
        ).fetchone()
        acks = con.execute(
            "select count(*) from acks where ts_ms between ? and ? and command_id not like 'fuzz%'",
            [lo, hi],
        ).fetchone()
        result[name] = Traffic((hi - lo) / 1000, telemetry[0] if telemetry else 0,
                               acks[0] if acks else 0)  # fmt: skip
    return result


async def _watch(procs: dict[str, subprocess.Popen[bytes]], died: dict[str, int]) -> None:
    while True:
        for name, proc in procs.items():
            if name not in died and proc.poll() is not None:
                died[name] = proc.returncode
                print(f"  !! {name} exited with {proc.returncode}", flush=True)
        await asyncio.sleep(0.5)


async def run(args: argparse.Namespace) -> int:
    """Start the site, run the campaign, print the tables; the exit status."""
    data_dir = Path(tempfile.mkdtemp(prefix="gridflex-fuzz-"))
    logs = data_dir / "logs"
    logs.mkdir()
    broker = start_broker()
    token = secrets.token_urlsafe(24)
    sim_base = free_port_block(args.inverters)
    plan = DemoPlan(
        args.inverters,
        args.chargers,
        free_port_block(args.inverters),  # the proxies: what the site file names
        free_port(),
        broker.url,
        api_port=free_port(),
        api_token=token,
    )
    site_file = data_dir / "site.toml"
    site_file.write_text(site_toml(plan) + _fuzz_station_toml(), encoding="utf-8")
    for topic_filter in pipeline_filters(SITE_ID):
        open_session(broker.url, f"{PIPELINE_CLIENT_ID}-0", topic_filter)
    parts = [
        replace(p, argv=[str(sim_base) if a == str(plan.inverter_base_port) else a for a in p.argv])
        if p.name == "sim-inverters"
        else p
        for p in plan_parts(plan, site_file)
    ]
    campaign = Campaign(args, token)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    servers = []
    try:
        for i in range(args.inverters):
            servers.append(await campaign.proxy(plan.inverter_base_port + i, sim_base + i))
        procs.update({part.name: spawn_part(part, logs) for part in parts})
        result = await _campaign(campaign, plan, procs, data_dir)
    finally:
        for server in servers:
            server.close()
        for task in campaign._connections:
            task.cancel()
        await asyncio.sleep(0.1)  # the proxies' connections end
        for part in stop_order(parts):  # as the demo stops: the pipeline last (it flushes)
            if part.name in procs:
                stop_process(procs[part.name], timeout_s=30)
        broker_rc = broker.process.poll() if broker.process else None
        broker.stop()
    crashed, api_alive, windows = result
    traffic = _traffic(data_dir, windows)
    for name, (count, _seconds) in campaign.relayed_in.items():
        traffic[name] = replace(traffic[name], relayed=count)
    return report(
        campaign,
        crashed=crashed,
        broker_rc=broker_rc,
        api_alive=api_alive,
        traffic=traffic,
        data_dir=data_dir,
    )


async def _campaign(
    campaign: Campaign, plan: DemoPlan, procs: dict[str, subprocess.Popen[bytes]], data_dir: Path
) -> tuple[dict[str, int], bool, dict[str, tuple[int, int]]]:
    """Settle, measure valid traffic alone, fuzz, drain: processes that died, API up, windows."""
    args = campaign.args
    died: dict[str, int] = {}
    watcher = asyncio.create_task(_watch(procs, died))
    dead = AsyncMqttClient(plan.mqtt_url, f"fuzz-dead-{secrets.token_hex(3)}", clean_session=True)
    dead.subscribe("gridflex/v1/deadletter/#", campaign.on_dead_letter, qos=1)
    await dead.start()
    assert plan.api_url is not None
    print(f"site in {data_dir}; settling {args.settle_s:.0f} s", flush=True)
    await asyncio.sleep(args.settle_s)
    if not _health(plan.api_url):
        print("the API is not up: see the logs", flush=True)

    before_ms, relayed = _now_ms(), campaign.relayed
    await asyncio.sleep(args.window_s)
    before = (before_ms, _now_ms())
    campaign.relayed_in["before"] = (campaign.relayed - relayed, args.window_s)
    print(f"valid traffic alone for {args.window_s:.0f} s; now {args.n:,} inputs", flush=True)

    campaign.counting_dead = True
    assets = [(f"inv-{i + 1:03d}", "inverter") for i in range(args.inverters)]
    assets += [(f"cs-{i + 1:03d}", "evse") for i in range(args.chargers)]
    started, relayed = _now_ms(), campaign.relayed
    progress = asyncio.create_task(_progress(campaign))
    try:
        async with asyncio.timeout(args.max_duration_s):
            await asyncio.gather(
                campaign.mqtt(plan.mqtt_url, assets),
                campaign.ocpp(f"ws://127.0.0.1:{plan.ocpp_port}/ocpp"),
                campaign.modbus(),
                campaign.http(plan.api_port or 0),
            )
    except TimeoutError:
        print(f"  stopped after --max-duration-s {args.max_duration_s:.0f}", flush=True)
    campaign.mangling = False
    during = (started, _now_ms())
    campaign.relayed_in["during"] = (campaign.relayed - relayed, (during[1] - started) / 1000)
    progress.cancel()
    print(f"campaign took {(during[1] - during[0]) / 1000:.1f} s; draining", flush=True)
    await asyncio.sleep(args.drain_s)
    api_alive = _health(plan.api_url)
    watcher.cancel()
    await dead.stop()
    return dict(died), api_alive, {"before": before, "during": during}


async def _progress(campaign: Campaign) -> None:
    while True:
        await asyncio.sleep(10)
        sent = {t: tally.sent for t, tally in campaign.tallies.items()}
        print(f"  sent {sent}; Modbus replies relayed {campaign.relayed:,}", flush=True)


#: The processes each target's inputs reach (a crash counts under every target it feeds).
PROCESSES_OF = {
    "mqtt": ("pipeline", "control", "collect-ocpp", "mosquitto"),
    "ocpp": ("collect-ocpp",),
    "modbus": ("collect-modbus", "control"),
    "http": ("control",),
}


def report(
    campaign: Campaign,
    *,
    crashed: dict[str, int],
    broker_rc: int | None,
    api_alive: bool,
    traffic: dict[str, Traffic],
    data_dir: Path,
) -> int:
    """Print the tables; 1 when a process died, HTTP 5xx or an OCPP InternalError."""
    dead = set(crashed) | ({"mosquitto"} if broker_rc is not None else set())
    crashes = {t: len(dead & set(names)) for t, names in PROCESSES_OF.items()}
    print()
    print("\n".join(table(campaign.tallies, crashes, total_crashes=len(dead))))
    print()
    print("\n".join(rate_table(traffic["before"], traffic["during"])))
    print()
    print("| answers and notes | count |")
    print("| --- | ---: |")
    for target, tally in campaign.tallies.items():
        for answer, n in sorted(tally.answers.items(), key=lambda kv: -kv[1]):
            print(f"| {target}: {answer} | {n:,} |")
    print(f"\ndead letters from valid traffic alone (before): {dict(campaign.baseline_dead)}")
    for name, rc in crashed.items():
        print(f"CRASH: {name} exited with {rc}")
    if broker_rc is not None:
        print(f"CRASH: mosquitto exited with {broker_rc}")
    if not api_alive:
        print("the API did not answer /health after the campaign")
    print(f"logs and history in {data_dir}")
    fivexx = sum(t.count(lambda a: a.startswith("HTTP 5")) for t in campaign.tallies.values())
    internal = campaign.tallies["ocpp"].answers["CALLERROR InternalError"]
    no_token = campaign.tallies["http"].count(lambda a: a.startswith("ACCEPTED WITHOUT"))
    failed = crashed or broker_rc is not None or fivexx or internal or no_token or not api_alive
    return 1 if failed else 0


def main() -> int:
    """Parse the options and run the campaign."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=100_000, help="malformed inputs in total")
    parser.add_argument("--rate", type=float, default=1_000.0, help="inputs per second, all")
    parser.add_argument("--mangle", type=float, default=0.1, help="share of replies mangled")
    parser.add_argument("--inverters", type=int, default=10)
    parser.add_argument("--chargers", type=int, default=5)
    parser.add_argument("--settle-s", type=float, default=20.0)
    parser.add_argument("--window-s", type=float, default=20.0, help="valid traffic alone")
    parser.add_argument("--drain-s", type=float, default=15.0, help="for the pipeline to catch up")
    parser.add_argument("--max-duration-s", type=float, default=1_800.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.n < 1 or args.rate <= 0 or not 0 < args.mangle <= 1 or args.inverters < 1:
        parser.error("-n, --rate, --inverters must be positive and --mangle in (0, 1]")
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
