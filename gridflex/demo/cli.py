"""The ``gridflex demo`` command: its arguments and :func:`main`, which runs the demo."""

from __future__ import annotations

import argparse
import logging
import math
import secrets
import shutil
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import get_args

from gridflex.broker import Broker, BrokerAuth, find_mosquitto, start_broker
from gridflex.broker_config import read_credentials
from gridflex.cli_args import count, existing_file, positive_seconds
from gridflex.config import METRICS_COMPONENTS
from gridflex.contract import PREFIX, DispatchMode
from gridflex.demo.parts import _MQTT_ROLE, _spawn, _stop_all, plan_parts
from gridflex.demo.plan import (
    MAX_DEMO_DEVICES,
    PIPELINE_CLIENT_ID,
    SITE_ID,
    DemoPlan,
    clear_history,
    site_toml,
)
from gridflex.demo.view import LiveView, api_banner, app_banner
from gridflex.mqtt import MqttClient, open_session
from gridflex.net import free_port, free_port_block
from pipelines.flow import pipeline_filters

__all__ = ["add_arguments", "main", "runs_app"]

log = logging.getLogger(__name__)


def runs_app(args: argparse.Namespace) -> bool:
    """Whether the demo starts the analytics app: not with ``--no-app`` or ``--no-ui``."""
    return not (args.no_app or args.no_ui)


def _capacity_w(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of watts >= 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gridflex demo``."""
    parser.add_argument(
        "--inverters",
        type=count(MAX_DEMO_DEVICES),
        default=20,
        help="simulated SunSpec inverters (default: %(default)s)",
    )
    parser.add_argument(
        "--chargers",
        type=count(MAX_DEMO_DEVICES),
        default=10,
        help="simulated OCPP stations with cars (default: %(default)s)",
    )
    parser.add_argument(
        "--duration", type=positive_seconds, default=None, metavar="S", help="stop after S seconds"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("gridflex-demo"),
        help="history folder (default: %(default)s)",
    )
    parser.add_argument(
        "--keep-history",
        action="store_true",
        help="add to the history of earlier runs instead of starting a fresh one",
    )
    parser.add_argument(
        "--dispatch",
        choices=get_args(DispatchMode),
        default="droop",
        help="[dispatch] mode written into the site file (default: %(default)s)",
    )
    parser.add_argument(
        "--fcr-capacity-w",
        type=_capacity_w,
        default=None,
        metavar="W",
        help="FCR capacity for --dispatch fcr (default: half the fleet's discharge rating)",
    )
    parser.add_argument(
        "--local-droop",
        action="store_true",
        help="write [dispatch] local_droop = true: the writer programs the droop into the "
        "devices, which respond on their own (not with --dispatch fcr)",
    )
    parser.add_argument(
        "--frequency-profile", type=existing_file, default=None, help="CSV of t_s,freq_hz to replay"
    )
    parser.add_argument("--mqtt-url", default=None, help="use this broker instead of one's own")
    parser.add_argument(
        "--no-ui",
        action="store_true",
        help="log a summary instead of the live view, and start no analytics app",
    )
    parser.add_argument(
        "--no-app", action="store_true", help="do not start the analytics app (gridflex app)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulators")
    parser.add_argument(
        "--sites",
        type=count(26),
        default=1,
        help="run N sites (each its own broker bridged to a central one, --dispatch fcr) "
        "and `gridflex central` sharing --fcr-capacity-w across them (default: %(default)s)",
    )


def main(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C, SIGTERM or ``--duration``; returns 0 when all parts stopped."""
    if args.local_droop and args.dispatch == "fcr":
        log.error("--local-droop adds the devices' own droop: use it with --dispatch droop or off")
        return 2
    if args.sites > 1:
        from gridflex.demo.sites import run_sites

        return run_sites(args)
    data_dir: Path = args.data_dir.resolve()
    if args.keep_history:
        log.info("keeping the history in %s (--keep-history)", data_dir)
    elif data_dir.is_dir():
        clear_history(data_dir)
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if args.fcr_capacity_w is not None and args.dispatch != "fcr":
        log.warning("--fcr-capacity-w applies to --dispatch fcr only; ignored")
    broker: Broker | None = None
    if args.mqtt_url is None:
        # Mosquitto with a generated user per role and the ACL; anonymous clients refused.
        # Persistence in the data folder: sessions and queued messages survive a restart
        # of the broker (a fresh demo run starts it empty, see DEMO_DIRS).
        auth = BrokerAuth(SITE_ID, data_dir / "broker")
        store = data_dir / "mosquitto"
        store.mkdir(parents=True, exist_ok=True)
        broker = start_broker(
            "mosquitto",
            auth=auth if find_mosquitto() is not None else None,
            persistence_dir=store,
        )
        mqtt_url = broker.url
        log.info(
            "broker: %s (%s%s)",
            mqtt_url,
            broker.kind,
            ", users and ACL" if broker.credentials else ", anonymous",
        )
    else:
        mqtt_url = args.mqtt_url
    plan = DemoPlan(
        inverters=args.inverters,
        chargers=args.chargers,
        inverter_base_port=free_port_block(max(args.inverters, 1)),
        ocpp_port=free_port(),
        mqtt_url=mqtt_url,
        seed=args.seed,
        dispatch=args.dispatch,
        fcr_capacity_w=args.fcr_capacity_w,
        local_droop=args.local_droop,
        api_port=free_port(),
        api_token=secrets.token_urlsafe(32),
        app_port=free_port() if runs_app(args) else None,
        metrics_ports=tuple((c, free_port()) for c in METRICS_COMPONENTS),
    )
    site_file = data_dir / "site.toml"
    site_file.write_text(site_toml(plan), encoding="utf-8")
    log.info("site file: %s (dispatch %s)", site_file, plan.dispatch)
    log.info("metrics: %s", ", ".join(plan.metrics_urls))
    banner = api_banner(plan)
    if banner is not None:
        sys.stdout.write(banner + "\n")  # the operator's token: printed, never logged
    app_line = app_banner(plan)
    if app_line is not None:
        sys.stdout.write(app_line + "\n")

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    creds = broker.credentials if broker is not None else {}
    viewer = read_credentials(creds["integrator"]) if creds else None
    pipeline = read_credentials(creds["pipeline"]) if creds else None
    view = LiveView(SITE_ID, dispatch_mode=plan.dispatch, api_banner=banner, app_banner=app_line)
    watcher = MqttClient(
        mqtt_url,
        f"gridflex-demo-view-{uuid.uuid4().hex[:6]}",
        username=viewer.username if viewer else None,
        password=viewer.password if viewer else None,
        clean_session=True,
    )
    watcher.subscribe(f"{PREFIX}/{SITE_ID}/#", view.on_message, qos=0)
    watcher.subscribe(f"{PREFIX}/deadletter/#", view.on_message, qos=0)
    watcher.start()

    # Open the pipeline's persistent session before any producer starts: the broker then
    # keeps every reading for the pipeline while Bytewax is still starting (its single MQTT
    # partition connects as "{client id}-0"), so the history starts at seq 0.
    for topic_filter in pipeline_filters(SITE_ID):  # readings and the writer's acks
        open_session(
            mqtt_url,
            f"{PIPELINE_CLIENT_ID}-0",
            topic_filter,
            username=pipeline.username if pipeline else None,
            password=pipeline.password if pipeline else None,
        )
    parts = plan_parts(plan, site_file, args.frequency_profile)
    for part in parts:
        role = _MQTT_ROLE[part.role]
        part.mqtt_credentials = creds[role] if creds and role is not None else None
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
                width = shutil.get_terminal_size().columns
                sys.stdout.write("\x1b[H\x1b[2J" + view.render(width=width) + "\n")
                sys.stdout.flush()
            elif time.monotonic() >= next_line:
                next_line += 5
                log.info("%s", view.headline())
            stop.wait(1.0)
    finally:
        codes = _stop_all(parts)
        watcher.stop(flush_timeout_s=0.5)
        if broker is not None:
            broker.stop()
    failed = {name: code for name, code in codes.items() if code not in (0, None)}
    sys.stdout.write(
        f"\nhistory and site file in {data_dir}\n"
        f"  gridflex query --data-dir {data_dir} "
        f"'select asset, count(*) as n, max(energy_export_wh) from telemetry group by asset'\n"
        f"  gridflex app --data-dir {data_dir}\n"
    )
    if failed:
        log.error("parts that did not stop cleanly: %s", failed)
        return 1
    return 0
