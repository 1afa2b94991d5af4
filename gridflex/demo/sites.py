"""``gridflex demo --sites N``: N sites and the central level on one machine.

Each site is what ``gridflex demo`` runs for one site (simulators, collectors, pipeline,
control), with its own Mosquitto (users, ACL, ``gridflex broker-config``'s files in
``DATA/sites/{site}/broker/``) bridged to a central Mosquitto: the bridge publishes the
site's retained summary upward, and only that, and brings the site's target down. ``gridflex
central --config DATA/central.toml`` shares the fleet FCR capacity (``--fcr-capacity-w``,
default half the fleet's discharge rating) across the sites by their flexibility; each
site's pipeline runs ``[dispatch] mode = "fcr"`` with a capacity of 0 W of its own, so
what it holds is what the central gives it.

The central broker runs ``gridflex broker-config --central``'s users and ACL
(``DATA/central-broker/``): each site's bridge logs in as ``{site}-bridge`` and may only
write its summary and read its target; ``gridflex central`` logs in as ``demo-central``.
Every site's history goes to the one ``--data-dir`` (each history file has a unique name,
each row its site), so one ``gridflex query`` sees every site; a site's recovery state,
write-ahead log, ledger and logs stay under ``DATA/sites/{site}/``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from gridflex.broker import (
    Broker,
    BrokerAuth,
    find_mosquitto,
    root_conf,
    start_broker,
    start_mosquitto_conf,
)
from gridflex.broker_config import Credentials, bridge_conf, read_credentials
from gridflex.central_broker import write_central_broker_config
from gridflex.contract import PREFIX, ContractError, SiteSummary, SiteTarget, parse_payload
from gridflex.demo.parts import Part, _spawn, _stop, plan_parts, stop_order
from gridflex.demo.plan import (
    EVSE_RATING_W,
    INVERTER_RATING_W,
    PIPELINE_CLIENT_ID,
    DemoPlan,
    clear_history,
    site_toml,
)
from gridflex.mqtt import MqttClient, open_session
from gridflex.net import free_port, free_port_block
from pipelines.flow import pipeline_filters

__all__ = ["MultiSitePlan", "central_toml", "run_sites", "site_ids", "sites_site_toml"]

log = logging.getLogger(__name__)

#: Seconds between stopping the producers and the pipelines (as the one-site demo).
_SETTLE_S = 0.5


def site_ids(n: int) -> list[str]:
    """The ids of ``n`` demo sites: ``site-a``, ``site-b``, ..."""
    return [f"site-{chr(ord('a') + i)}" for i in range(n)]


class MultiSitePlan:
    """The sites, the fleet capacity and where each site keeps its own state."""

    def __init__(self, args: argparse.Namespace, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.sites = site_ids(args.sites)
        per_site_w = args.inverters * INVERTER_RATING_W + args.chargers * EVSE_RATING_W
        self.fcr_capacity_w: float = (
            args.fcr_capacity_w
            if args.fcr_capacity_w is not None
            else per_site_w * len(self.sites) / 2
        )

    def site_dir(self, site: str) -> Path:
        """``DATA/sites/{site}``: the site's file, broker, recovery, WAL, ledger and logs."""
        return self.data_dir / "sites" / site


def sites_site_toml(plan: DemoPlan, site_dir: Path) -> str:
    """The site file of one site of a multi-site demo (history in ``DATA``, two levels up).

    Recovery and write-ahead log stay in the site's own folder (absolute paths).
    """
    return (
        site_toml(plan)
        + "\n[pipeline]                      # this site's own state, beside its site file\n"
        + f'recovery_dir = "{site_dir / "recovery"}"\n'
        + f'wal_dir = "{site_dir / "wal"}"\n'
    )


def central_toml(
    sites: list[str], url: str, fcr_capacity_w: float, credentials: Path | None = None
) -> str:
    """The ``central.toml`` of the demo (``credentials``: the central's MQTT user file)."""
    listed = ", ".join(f'"{s}"' for s in sites)
    login = "" if credentials is None else f'credentials = "{credentials}"\n'
    return (
        "# written by `gridflex demo --sites N`: gridflex central --config central.toml\n"
        "[central]\n"
        'id = "demo"\n'
        "interval_s = 1.0\n"
        "stale_after_s = 5.0\n"
        "target_valid_s = 30.0\n"
        f"sites = [{listed}]\n\n"
        "[mqtt]\n"
        f'url = "{url}"\n'
        f"{login}\n"
        "[service]\n"
        f"fcr_capacity_w = {fcr_capacity_w:.1f}\n"
    )


class _CentralView:
    """The latest summary and target of each site, as seen on the central broker."""

    def __init__(self) -> None:
        self.summaries: dict[str, SiteSummary] = {}
        self.targets: dict[str, SiteTarget] = {}
        self._lock = threading.Lock()

    def on_message(self, _topic: str, payload: bytes) -> None:
        try:
            item = parse_payload(payload)
        except ContractError:
            return
        with self._lock:
            if isinstance(item, SiteSummary):
                self.summaries[item.site] = item
            elif isinstance(item, SiteTarget):
                self.targets[item.site] = item

    def headline(self, sites: list[str]) -> str:
        with self._lock:
            parts = []
            for site in sites:
                s, t = self.summaries.get(site), self.targets.get(site)
                target = f"{t.fcr_capacity_w:.0f} W" if t else "?"
                allocated = f"{s.allocated_w:+.0f} W" if s else "?"
                online = f"{s.assets_online}/{s.assets_total}" if s else "?"
                parts.append(f"{site}: target {target}, allocated {allocated}, online {online}")
        return "; ".join(parts)


def _clear(data_dir: Path) -> None:
    clear_history(data_dir)
    for path in (data_dir / "sites", data_dir / "central-broker", data_dir / "central.toml"):
        if path.is_symlink():
            continue
        if path.is_dir():
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()


def run_sites(args: argparse.Namespace) -> int:
    """Run ``args.sites`` sites and the central until Ctrl-C, SIGTERM or ``--duration``."""
    if args.mqtt_url is not None:
        log.error("--sites runs a broker per site and a central one: leave out --mqtt-url")
        return 2
    if find_mosquitto() is None:
        log.error("--sites bridges Mosquitto brokers: install mosquitto")
        return 2
    if args.dispatch != "fcr":
        log.info("--sites: every site dispatches fcr, its capacity given by the central")
    data_dir: Path = args.data_dir.resolve()
    if not args.keep_history and data_dir.is_dir():
        _clear(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    plan = MultiSitePlan(args, data_dir)
    brokers: list[Broker] = []
    parts: list[Part] = []
    central_part: Part | None = None
    watcher: MqttClient | None = None
    codes: dict[str, int | None] = {}
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        port = free_port()
        central_files = write_central_broker_config(
            "demo",
            plan.sites,
            data_dir / "central-broker",
            bind="127.0.0.1",
            port=port,
            extra_conf=root_conf(),
        )
        central = start_mosquitto_conf(central_files.conf, "127.0.0.1", port)
        brokers.append(central)
        log.info("central broker: %s (users and ACL in %s)", central.url, central_files.conf)
        for site in plan.sites:
            bridge = read_credentials(central_files.credentials[f"bridge-{site}"])
            parts += _start_site(
                site, plan, central=central, bridge=bridge, brokers=brokers, args=args
            )
        central_file = data_dir / "central.toml"
        central_file.write_text(
            central_toml(
                plan.sites,
                central.url,
                plan.fcr_capacity_w,
                central_files.credentials["central"],
            ),
            encoding="utf-8",
        )
        view = _CentralView()
        viewer = read_credentials(central_files.credentials["integrator"])
        watcher = MqttClient(
            central.url,
            f"gridflex-demo-central-view-{uuid.uuid4().hex[:6]}",
            username=viewer.username,
            password=viewer.password,
            clean_session=True,
        )
        watcher.subscribe(f"{PREFIX}/+/summary", view.on_message, qos=0)
        watcher.subscribe(f"{PREFIX}/+/target", view.on_message, qos=0)
        watcher.start()
        central_part = Part("central", "control", ["central", "--config", str(central_file)])
        logs = data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        _spawn(central_part, logs)
        for part in parts:
            _spawn(part, data_dir / "sites")  # DATA/sites/{site}/{part}.log
        started = time.monotonic()
        next_line = started + 5
        all_parts = [central_part, *parts]
        while not stop.is_set():
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
            dead = [p for p in all_parts if p.process is not None and p.process.poll() is not None]
            if dead:
                for p in dead:
                    log.error("%s exited with %s", p.name, p.process and p.process.returncode)
                break
            if time.monotonic() >= next_line:
                next_line += 5
                log.info("%s", view.headline(plan.sites))
            stop.wait(1.0)
    finally:
        if central_part is not None:
            codes["central"] = _stop(central_part)
        for part in stop_order(parts):
            if part.role == "pipeline" and len(codes) > 1:
                time.sleep(_SETTLE_S)
            codes[part.name] = _stop(part)
        if watcher is not None:
            watcher.stop(flush_timeout_s=0.5)
        for broker in reversed(brokers):
            broker.stop()
    failed = {name: code for name, code in codes.items() if code not in (0, None)}
    sys.stdout.write(
        f"\n{len(plan.sites)} sites' history in {data_dir}\n"
        f"  gridflex query --data-dir {data_dir} "
        "'select site, count(*) as n from commands group by site order by site'\n"
    )
    if failed:
        log.error("parts that did not stop cleanly: %s", failed)
        return 1
    return 0


def _start_site(
    site: str,
    plan: MultiSitePlan,
    *,
    central: Broker,
    bridge: Credentials,
    brokers: list[Broker],
    args: argparse.Namespace,
) -> list[Part]:
    """Start one site's broker (bridged to ``central`` as ``bridge``); return its parts."""
    site_dir = plan.site_dir(site)
    site_dir.mkdir(parents=True, exist_ok=True)
    broker = start_broker(
        "mosquitto",
        auth=BrokerAuth(
            site,
            site_dir / "broker",
            bridge=bridge_conf(site, central.url, credentials=bridge),
        ),
    )
    brokers.append(broker)
    log.info("site %s: broker %s, bridged to %s", site, broker.url, central.url)
    demo_plan = DemoPlan(
        inverters=args.inverters,
        chargers=args.chargers,
        inverter_base_port=free_port_block(max(args.inverters, 1)),
        ocpp_port=free_port(),
        mqtt_url=broker.url,
        seed=args.seed,
        dispatch="fcr",
        fcr_capacity_w=0.0,  # the central gives it
        site_id=site,
        history_dir=str(plan.data_dir),
    )
    site_file = site_dir / "site.toml"
    site_file.write_text(sites_site_toml(demo_plan, site_dir), encoding="utf-8")
    pipeline = read_credentials(broker.credentials["pipeline"])
    for topic_filter in pipeline_filters(site):  # the pipeline's session before producers
        open_session(
            broker.url,
            f"{PIPELINE_CLIENT_ID}-0",
            topic_filter,
            username=pipeline.username,
            password=pipeline.password,
        )
    parts = plan_parts(demo_plan, site_file, args.frequency_profile)
    for part in parts:
        part.name = f"{site}/{part.name}"
        has_role = part.role in ("control", "collector", "pipeline")
        part.mqtt_credentials = broker.credentials[part.role] if has_role else None
        if part.role == "control":
            part.argv += ["--ledger", str(site_dir / "control" / "ledger.sqlite3")]
    return parts
