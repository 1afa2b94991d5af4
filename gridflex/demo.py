"""``gridflex demo``: the whole system on one machine with simulated assets.

It starts a broker (Mosquitto on a free loopback port when installed, else the embedded
amqtt broker; ``--mqtt-url`` uses an existing one), writes the site file it runs into the
data directory (``site.toml``), then starts each part as its own process, exactly as an
operator would::

    gridflex sim inverters  --count N --base-port P
    gridflex sim chargers   --count M --csms-url ws://127.0.0.1:Q/ocpp
    gridflex collect modbus --site DATA/site.toml
    gridflex collect ocpp   --site DATA/site.toml
    gridflex pipeline       --site DATA/site.toml

and shows a live terminal view of the MQTT topics. Ctrl-C or ``--duration`` stops the parts
in order (collectors, pipeline, simulators, broker) so the history is flushed. Each part's log
is in ``DATA/logs/``; each part can be rerun on its own against ``DATA/site.toml``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gridflex.broker import Broker, start_broker
from gridflex.contract import PREFIX
from gridflex.mqtt import MqttClient, open_session
from gridflex.net import free_port, free_port_block

__all__ = ["DemoPlan", "LiveView", "add_arguments", "main", "site_toml"]

log = logging.getLogger(__name__)

SITE_ID = "demo"
#: The pipeline's MQTT client id: it names its persistent session on the broker.
PIPELINE_CLIENT_ID = f"gridflex-pipeline-{SITE_ID}"


@dataclass(frozen=True)
class DemoPlan:
    """What the demo runs: the numbers and ports the site file is written from."""

    inverters: int
    chargers: int
    inverter_base_port: int
    ocpp_port: int
    mqtt_url: str
    nominal_hz: int = 50
    seed: int = 1

    def station_id(self, i: int) -> str:
        """Station identity of the i-th simulated charger (``CS001`` ...)."""
        return f"CS{i + 1:03d}"

    def station_password(self, i: int) -> str:
        """Deterministic per-station Basic-auth password for the demo (not a secret)."""
        return f"demo-password-{self.station_id(i).lower()}"


def site_toml(plan: DemoPlan) -> str:
    """The site file for ``plan`` (history in the folder of the file itself)."""
    lines = [
        "# written by `gridflex demo`; rerun any part against this file, e.g.",
        "#   gridflex query --data-dir . 'select count(*) from telemetry'",
        "[site]",
        f'id = "{SITE_ID}"',
        f"nominal_frequency_hz = {plan.nominal_hz}",
        "",
        "[mqtt]",
        f'url = "{plan.mqtt_url}"',
        "",
        "[history]",
        'dir = "."',
        "",
        "[ocpp]",
        'host = "127.0.0.1"',
        f"port = {plan.ocpp_port}",
        "meter_interval_s = 1.0",
        "",
    ]
    for i in range(plan.inverters):
        lines += [
            "[[assets]]",
            f'id = "inv-{i + 1:03d}"',
            'kind = "inverter"',
            'host = "127.0.0.1"',
            f"port = {plan.inverter_base_port + i}",
            "max_charge_w = 10000",
            "max_discharge_w = 10000",
            "capacity_wh = 60000",
            "",
        ]
    for i in range(plan.chargers):
        lines += [
            "[[assets]]",
            f'id = "cs-{i + 1:03d}"',
            'kind = "evse"',
            f'station_id = "{plan.station_id(i)}"',
            f'password = "{plan.station_password(i)}"',
            "max_charge_w = 11000",
            "max_discharge_w = 11000",
            "",
        ]
    return "\n".join(lines)


@dataclass
class _Part:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None


@dataclass
class LiveView:
    """Latest state per asset and of the grid, fed from MQTT, rendered as a text table."""

    site: str
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    deadletters: int = 0
    telemetry_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, topic: str, payload: bytes) -> None:
        """Fold one MQTT message into the view."""
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        parts = topic.split("/")
        with self.lock:
            if parts[2] == "deadletter":
                self.deadletters += 1
            elif parts[-2:] == ["grid", "frequency"]:
                self.grid = obj
            elif parts[-1] == "telemetry":
                self.telemetry_count += 1
                self.assets.setdefault(parts[-2], {"kind": parts[-3]})["telemetry"] = obj
            elif parts[-1] == "status" and parts[-3] in ("inverter", "evse"):
                self.assets.setdefault(parts[-2], {"kind": parts[-3]})["status"] = obj

    def render(self, max_rows: int = 40) -> str:
        """The screen: grid frequency, then one row per asset."""
        with self.lock:
            grid = dict(self.grid)
            assets = {k: dict(v) for k, v in sorted(self.assets.items())}
            dead, count = self.deadletters, self.telemetry_count
        out = [f"gridflex demo - site {self.site}   (Ctrl-C stops)", ""]
        if grid:
            out.append(
                f"grid frequency  {grid.get('mean_hz', 0):.3f} Hz   deviation "
                f"{grid.get('deviation_hz', 0) * 1000:+7.1f} mHz   RoCoF "
                f"{grid.get('rocof_hz_per_s', 0) * 1000:+7.1f} mHz/s   "
                f"({grid.get('assets', 0)} assets, {grid.get('samples', 0)} samples)"
            )
        else:
            out.append("grid frequency  (waiting for the first window)")
        total_w = sum(a.get("telemetry", {}).get("power_w", 0.0) for a in assets.values())
        out.append(
            f"site power      {total_w / 1000:+9.1f} kW    telemetry messages {count}"
            f"    dead letters {dead}"
        )
        out.append("")
        out.append(f"{'asset':10} {'kind':8} {'status':10} {'power kW':>9} {'SoC %':>6} {'Hz':>7}")
        for name, state in list(assets.items())[:max_rows]:
            tel = state.get("telemetry", {})
            status = state.get("status", {})
            label = status.get("state", "?") if status else "?"
            soc = tel.get("soc_pct")
            freq = tel.get("freq_hz")
            out.append(
                f"{name:10} {state['kind']:8} {label:10} "
                f"{tel.get('power_w', 0.0) / 1000:+9.2f} "
                f"{'' if soc is None else f'{soc:.1f}':>6} "
                f"{'' if freq is None else f'{freq:.3f}':>7}"
            )
        if len(assets) > max_rows:
            out.append(f"... and {len(assets) - max_rows} more")
        return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gridflex demo``."""
    parser.add_argument("--inverters", type=int, default=5, help="simulated inverters (5)")
    parser.add_argument(
        "--chargers", type=int, default=10, help="simulated OCPP stations with cars (10)"
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    parser.add_argument(
        "--data-dir", type=Path, default=Path("gridflex-demo"), help="history folder"
    )
    parser.add_argument(
        "--frequency-profile", type=Path, default=None, help="CSV of t_s,freq_hz to replay"
    )
    parser.add_argument("--mqtt-url", default=None, help="use this broker instead of one's own")
    parser.add_argument("--no-ui", action="store_true", help="log a summary instead of a view")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulators")


def _spawn(part: _Part, logs: Path) -> None:
    part.log_file = (logs / f"{part.name}.log").open("ab")
    part.process = subprocess.Popen(
        [sys.executable, "-m", "gridflex.cli", *part.argv],
        stdout=part.log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the demo only; it stops parts in order
    )
    log.info("started %s (pid %d): gridflex %s", part.name, part.process.pid, " ".join(part.argv))


def _stop(part: _Part, timeout_s: float = 15.0) -> int | None:
    proc = part.process
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "%s (pid %d) did not stop in %.0f s; killing", part.name, proc.pid, timeout_s
            )
            proc.kill()
            proc.wait()
    if part.log_file is not None:
        part.log_file.close()
    return proc.returncode


def _parts(plan: DemoPlan, site_file: Path, args: argparse.Namespace) -> list[_Part]:
    site = str(site_file)
    parts: list[_Part] = []
    if plan.inverters:
        sim = [
            "sim",
            "inverters",
            "--count",
            str(plan.inverters),
            "--base-port",
            str(plan.inverter_base_port),
            "--seed",
            str(plan.seed),
            "--nominal-hz",
            str(plan.nominal_hz),
        ]
        if args.frequency_profile is not None:
            sim += ["--frequency-profile", str(args.frequency_profile.resolve())]
        parts.append(_Part("sim-inverters", sim))
    if plan.chargers:
        parts.append(_Part("collect-ocpp", ["collect", "ocpp", "--site", site]))
        parts.append(
            _Part(
                "sim-chargers",
                [
                    "sim",
                    "chargers",
                    "--count",
                    str(plan.chargers),
                    "--csms-url",
                    f"ws://127.0.0.1:{plan.ocpp_port}/ocpp",
                    "--site",
                    site,
                    "--seed",
                    str(plan.seed),
                ],
            )
        )
    parts.append(_Part("pipeline", ["pipeline", "--site", site, "--client-id", PIPELINE_CLIENT_ID]))
    if plan.inverters:
        parts.append(_Part("collect-modbus", ["collect", "modbus", "--site", site]))
    return parts


def main(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C, SIGTERM or ``--duration``; returns 0 when all parts stopped."""
    data_dir: Path = args.data_dir.resolve()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    broker: Broker | None = None
    if args.mqtt_url is None:
        broker = start_broker("mosquitto")
        mqtt_url = broker.url
        log.info("broker: %s (%s)", mqtt_url, broker.kind)
    else:
        mqtt_url = args.mqtt_url
    plan = DemoPlan(
        inverters=args.inverters,
        chargers=args.chargers,
        inverter_base_port=free_port_block(max(args.inverters, 1)),
        ocpp_port=free_port(),
        mqtt_url=mqtt_url,
        seed=args.seed,
    )
    site_file = data_dir / "site.toml"
    site_file.write_text(site_toml(plan), encoding="utf-8")
    log.info("site file: %s", site_file)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    view = LiveView(SITE_ID)
    watcher = MqttClient(mqtt_url, f"gridflex-demo-view-{uuid.uuid4().hex[:6]}", clean_session=True)
    watcher.subscribe(f"{PREFIX}/{SITE_ID}/#", view.on_message, qos=0)
    watcher.subscribe(f"{PREFIX}/deadletter/#", view.on_message, qos=0)
    watcher.start()

    # Open the pipeline's persistent session before any producer starts: the broker then
    # keeps every reading for the pipeline while Bytewax is still starting (its single MQTT
    # partition connects as "{client id}-0"), so the history starts at seq 0.
    open_session(mqtt_url, f"{PIPELINE_CLIENT_ID}-0", f"{PREFIX}/{SITE_ID}/+/+/telemetry")
    parts = _parts(plan, site_file, args)
    codes: dict[str, int | None] = {}
    try:
        for part in parts:
            _spawn(part, logs)
        started = time.monotonic()
        tty = sys.stdout.isatty() and not args.no_ui
        next_line = started
        while not stop.is_set():
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
            dead = [p for p in parts if p.process is not None and p.process.poll() is not None]
            if dead:
                for p in dead:
                    log.error(
                        "%s exited with %s; see %s",
                        p.name,
                        p.process.returncode if p.process else None,
                        logs / f"{p.name}.log",
                    )
                break
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J" + view.render() + "\n")
                sys.stdout.flush()
            elif time.monotonic() >= next_line:
                next_line += 5
                log.info("%s", view.render(max_rows=0).splitlines()[2])
            stop.wait(1.0)
    finally:
        # Collectors first (retained offline status), then the pipeline (flushes history).
        for part in reversed(parts):
            codes[part.name] = _stop(part)
        watcher.stop(flush_timeout_s=0.5)
        if broker is not None:
            broker.stop()
    failed = {name: code for name, code in codes.items() if code not in (0, None)}
    sys.stdout.write(
        f"\nhistory and site file in {data_dir}\n"
        f"  gridflex query --data-dir {data_dir} "
        f"'select asset, count(*) as n, max(energy_export_wh) from telemetry group by asset'\n"
    )
    if failed:
        log.error("parts that did not stop cleanly: %s", failed)
        return 1
    return 0
