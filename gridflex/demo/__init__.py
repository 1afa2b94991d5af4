"""``gridflex demo``: the whole system on one machine with simulated assets.

It starts a broker (Mosquitto on a free loopback port when installed, else the embedded
amqtt broker; ``--mqtt-url`` uses an existing one), writes the site file it runs into the
data directory (``site.toml``), then starts each part as its own process, exactly as an
operator would. Its own Mosquitto refuses anonymous clients: ``DATA/broker/`` holds the
configuration of ``gridflex broker-config`` with a generated password per role, and each
part gets its role's credentials file through ``GRIDFLEX_MQTT_CREDENTIALS`` (the site file
holds no MQTT secret)::

    gridflex sim inverters  --count N --base-port P
    gridflex sim chargers   --count M --csms-url ws://127.0.0.1:Q/ocpp
    gridflex collect modbus --site DATA/site.toml
    gridflex collect ocpp   --site DATA/site.toml
    gridflex pipeline       --site DATA/site.toml
    gridflex control        --site DATA/site.toml

and shows a live terminal view of the MQTT topics: per asset its last reading and the last
dispatch command, and the pipeline's site summary. ``--dispatch off|droop|fcr`` chooses the
``[dispatch]`` mode written into the site file. The site file also gets an ``[api]`` table
(a free loopback port and a fresh token from ``secrets.token_urlsafe``): ``gridflex
control`` serves its REST API there, and the view's banner shows the URL and the token.
Beside the live system it starts the analytics app (``gridflex app`` on a free loopback
port, over the same history) and prints its URL; ``--no-app`` or ``--no-ui`` leave it out.

Each run starts with a fresh history: what an earlier run wrote into the data directory (the
history streams, the pipeline's recovery state and write-ahead log, the control ledger, ``logs/``,
``site.toml``) is removed first, nothing else; ``--keep-history`` keeps it. Ctrl-C or
``--duration`` stops the parts in :func:`stop_order`: the setpoint writer first (the
simulated inverters then revert on their own 704 timers), the producers next (simulators,
then collectors), so their last readings
still reach the pipeline, then the pipeline (it flushes the history), then the broker. Each
part's log is in ``DATA/logs/``; each part can be rerun on its own against ``DATA/site.toml``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal, get_args

from gridflex import jsonio
from gridflex.broker import Broker, BrokerAuth, find_mosquitto, start_broker
from gridflex.broker_config import Role as BrokerRole
from gridflex.broker_config import read_credentials
from gridflex.cli_args import count, existing_file, positive_seconds
from gridflex.config import METRICS_COMPONENTS, MQTT_CREDENTIALS_ENV
from gridflex.contract import PREFIX, DispatchMode
from gridflex.history import STREAMS
from gridflex.mqtt import MqttClient, open_session
from gridflex.net import free_port, free_port_block
from pipelines.flow import pipeline_filters

__all__ = [
    "DEMO_DIRS",
    "DEMO_FILES",
    "DemoPlan",
    "LiveView",
    "Part",
    "add_arguments",
    "api_banner",
    "app_banner",
    "clear_history",
    "main",
    "plan_parts",
    "runs_app",
    "site_toml",
    "stop_order",
]

log = logging.getLogger(__name__)

SITE_ID = "demo"
#: The pipeline's MQTT client id: it names its persistent session on the broker.
PIPELINE_CLIENT_ID = f"gridflex-pipeline-{SITE_ID}"

#: Ratings the site file declares for each simulated asset (W, Wh).
INVERTER_RATING_W: Final = 10_000.0
INVERTER_CAPACITY_WH: Final = 60_000.0
EVSE_RATING_W: Final = 11_000.0
#: Most simulated inverters (or chargers) one demo runs: one TCP port each.
MAX_DEMO_DEVICES: Final = 5_000

#: What a demo run writes into its data directory, and all that a fresh run removes: the
#: history streams, the streams, recovery state and write-ahead log the dispatching pipeline
#: adds, the writer's ledger, the logs, the broker's configuration and persistence.
DEMO_DIRS: Final = (*STREAMS, "recovery", "wal", "control", "logs", "broker", "mosquitto")
DEMO_FILES: Final = ("site.toml",)

#: Seconds between stopping the last collector and the pipeline: the collectors' last
#: messages, already acknowledged by the broker, reach the pipeline's subscriber.
_SETTLE_S: Final = 0.5

Role = Literal["control", "simulator", "collector", "pipeline", "app"]

#: The broker user each kind of part logs in as (simulators do not use MQTT).
_MQTT_ROLE: Final[dict[Role, BrokerRole | None]] = {
    "control": "control",
    "simulator": None,
    "collector": "collector",
    "pipeline": "pipeline",
    "app": None,  # reads the history only
}
#: Stop order by role: the writer first (the devices then revert on their own timers), then
#: producers before their consumers (see :func:`stop_order`).
_STOP_RANK: Final[dict[Role, int]] = {
    "app": 0,
    "control": 0,
    "simulator": 1,
    "collector": 2,
    "pipeline": 3,
}


@dataclass(frozen=True)
class DemoPlan:
    """What the demo runs: the numbers and ports the site file is written from.

    ``fcr_capacity_w`` is the FCR capacity for ``dispatch == "fcr"``; ``None`` means half
    the fleet's summed discharge rating.
    """

    inverters: int
    chargers: int
    inverter_base_port: int
    ocpp_port: int
    mqtt_url: str
    nominal_hz: int = 50
    seed: int = 1
    dispatch: DispatchMode = "droop"
    fcr_capacity_w: float | None = None
    local_droop: bool = False
    api_port: int | None = None
    api_token: str | None = None
    app_port: int | None = None
    #: ``(component, port)``: where each long-running part serves its Prometheus metrics.
    metrics_ports: tuple[tuple[str, int], ...] = ()
    #: the site id and history folder written (``gridflex demo --sites N`` runs several)
    site_id: str = SITE_ID
    history_dir: str = "."

    @property
    def metrics_urls(self) -> list[str]:
        """``component http://127.0.0.1:P/metrics`` per part that serves metrics."""
        return [f"{c} http://127.0.0.1:{p}/metrics" for c, p in self.metrics_ports]

    @property
    def api_url(self) -> str | None:
        """The REST API that ``gridflex control`` serves (``[api] listen``), or None."""
        return None if self.api_port is None else f"http://127.0.0.1:{self.api_port}/api/v1"

    @property
    def app_url(self) -> str | None:
        """The analytics app (``gridflex app``), or None when the demo runs none."""
        return None if self.app_port is None else f"http://127.0.0.1:{self.app_port}/"

    def station_id(self, i: int) -> str:
        """Station identity of the i-th simulated charger (``CS001`` ...)."""
        return f"CS{i + 1:03d}"

    def station_password(self, i: int) -> str:
        """Deterministic per-station Basic-auth password for the demo (not a secret)."""
        return f"demo-password-{self.station_id(i).lower()}"

    @property
    def fleet_charge_w(self) -> float:
        """Summed charge rating of all simulated assets (W)."""
        return self.inverters * INVERTER_RATING_W + self.chargers * EVSE_RATING_W

    @property
    def fleet_discharge_w(self) -> float:
        """Summed discharge rating of all simulated assets (W)."""
        return self.inverters * INVERTER_RATING_W + self.chargers * EVSE_RATING_W

    @property
    def fcr_capacity(self) -> float:
        """The FCR capacity written for ``--dispatch fcr`` (W)."""
        if self.fcr_capacity_w is not None:
            return self.fcr_capacity_w
        return self.fleet_discharge_w / 2


def site_toml(plan: DemoPlan) -> str:
    """The site file for ``plan`` (history in the folder of the file itself)."""
    lines = [
        "# written by `gridflex demo`; rerun any part against this file, e.g.",
        "#   gridflex query --data-dir . 'select count(*) from telemetry'",
        "[site]",
        f'id = "{plan.site_id}"',
        f"nominal_frequency_hz = {plan.nominal_hz}",
    ]
    if plan.dispatch == "fcr" and plan.fleet_charge_w > 0 and plan.fleet_discharge_w > 0:
        lines += [
            "# the fleet's summed ratings: the site connection never limits the demo",
            f"max_import_w = {plan.fleet_charge_w:.1f}",
            f"max_export_w = {plan.fleet_discharge_w:.1f}",
        ]
    lines += [
        "",
        "[mqtt]",
        f'url = "{plan.mqtt_url}"',
        "",
        "[history]",
        f'dir = "{plan.history_dir}"',
        "",
        "[ocpp]",
        'host = "127.0.0.1"',
        f"port = {plan.ocpp_port}",
        "meter_interval_s = 1.0",
        "",
        "[dispatch]",
        f'mode = "{plan.dispatch}"',
        *(["local_droop = true"] if plan.local_droop else []),
        "",
    ]
    if plan.dispatch == "fcr":
        lines += ["[dispatch.fcr]", f"capacity_w = {plan.fcr_capacity:.1f}", ""]
    if plan.api_port is not None:
        lines += [
            "[api]                          # the REST API of `gridflex control`",
            f'listen = "127.0.0.1:{plan.api_port}"',
        ]
        if plan.api_token is not None:
            lines.append(f'token = "{plan.api_token}"   # a fresh one each demo run')
        lines.append("")
    if plan.metrics_ports:
        lines.append("[metrics]                      # each process's Prometheus endpoint")
        lines += [
            f'{c} = "127.0.0.1:{p}"'.ljust(32) + f"# http://127.0.0.1:{p}/metrics"
            for c, p in plan.metrics_ports
        ]
        lines.append("")
    for i in range(plan.inverters):
        lines += [
            "[[assets]]",
            f'id = "inv-{i + 1:03d}"',
            'kind = "inverter"',
            'host = "127.0.0.1"',
            f"port = {plan.inverter_base_port + i}",
            f"max_charge_w = {INVERTER_RATING_W:.0f}",
            f"max_discharge_w = {INVERTER_RATING_W:.0f}",
            f"capacity_wh = {INVERTER_CAPACITY_WH:.0f}",
            "",
        ]
    for i in range(plan.chargers):
        lines += [
            "[[assets]]",
            f'id = "cs-{i + 1:03d}"',
            'kind = "evse"',
            f'station_id = "{plan.station_id(i)}"',
            f'password = "{plan.station_password(i)}"',
            f"max_charge_w = {EVSE_RATING_W:.0f}",
            f"max_discharge_w = {EVSE_RATING_W:.0f}",
            "",
        ]
    return "\n".join(lines)


def api_banner(plan: DemoPlan) -> str | None:
    """The banner line with the API's URL and token, when the demo serves the API.

    ``gridflex control`` serves it; the demo runs the writer whenever it has assets.
    """
    if plan.api_url is None or plan.api_token is None or not (plan.inverters or plan.chargers):
        return None
    return f"REST API        {plan.api_url}   token {plan.api_token}"


def app_banner(plan: DemoPlan) -> str | None:
    """The banner line with the analytics app's URL, when the demo runs the app."""
    return None if plan.app_url is None else f"analytics app   {plan.app_url}"


def runs_app(args: argparse.Namespace) -> bool:
    """Whether the demo starts the analytics app: not with ``--no-app`` or ``--no-ui``."""
    return not (args.no_app or args.no_ui)


def clear_history(data_dir: Path) -> list[Path]:
    """Remove what an earlier demo run wrote into ``data_dir``; return what was removed.

    Only :data:`DEMO_DIRS` (whole folders) and :data:`DEMO_FILES` are removed; any other
    file or folder of the user stays, and so does a symbolic link by one of those names
    (it points at something the demo did not create).
    """
    removed: list[Path] = []
    for name in (*DEMO_DIRS, *DEMO_FILES):
        path = data_dir / name
        if path.is_symlink():
            log.warning("fresh history: kept %s, a symbolic link", path)
        elif name in DEMO_DIRS and path.is_dir():
            shutil.rmtree(path)
            removed.append(path)
        elif name in DEMO_FILES and path.is_file():
            path.unlink()
            removed.append(path)
    if removed:
        log.info(
            "fresh history: removed %s from %s (--keep-history keeps them)",
            ", ".join(p.name for p in removed),
            data_dir,
        )
    return removed


@dataclass
class Part:
    """One process of the demo: its role decides when it stops (:func:`stop_order`)."""

    name: str
    role: Role
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    #: the MQTT credentials file of the part's role (the demo's own broker), or None
    mqtt_credentials: Path | None = None
    log_file: IO[bytes] | None = None


def stop_order(parts: Sequence[Part]) -> list[Part]:
    """The order to stop ``parts`` in: simulators, then collectors, then the pipeline.

    Producers stop before their consumers, so the last readings (an EV's final meter
    values, the collectors' offline status) still reach the pipeline and the history.
    Within one role, parts stop in the reverse of their start order.
    """
    return sorted(reversed(parts), key=lambda part: _STOP_RANK[part.role])


def _num(obj: Any, key: str) -> float | None:
    """``obj[key]`` as a finite float, else ``None`` (the view trusts no payload)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(obj: Any, key: str) -> str | None:
    """``obj[key]`` if it is a string, on one line; else ``None``."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return " ".join(value.split()) if isinstance(value, str) else None


def _fmt(value: float | None, spec: str, default: str = "?") -> str:
    return default if value is None else format(value, spec)


def _shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the cut marked with an ellipsis."""
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…" if width > 0 else ""


@dataclass
class LiveView:
    """Latest state per asset and of the grid and site, fed from MQTT, rendered as text.

    ``on_message`` keeps whatever JSON object arrives; ``render`` reads each field leniently
    (a missing, mistyped or non-finite value shows as blank or ``?``), so no payload can
    stop the view.
    """

    site: str
    dispatch_mode: str = "off"
    api_banner: str | None = None
    app_banner: str | None = None
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    deadletters: int = 0
    telemetry_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_message(self, topic: str, payload: bytes) -> None:
        """Fold one MQTT message into the view; anything that is not a JSON object is ignored."""
        try:
            obj = jsonio.loads(payload)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        parts = topic.split("/")
        if len(parts) < 3:
            return
        with self.lock:
            if parts[2] == "deadletter":
                self.deadletters += 1
            elif parts[3:] == ["grid", "frequency"]:
                self.grid = obj
            elif parts[3:] == ["summary"]:
                self.summary = obj
            elif len(parts) == 6:
                self._fold_asset(parts[3], parts[4], parts[5], obj)

    def _fold_asset(self, group: str, asset: str, leaf: str, obj: dict[str, Any]) -> None:
        if group in ("inverter", "evse") and leaf in ("telemetry", "status"):
            if leaf == "telemetry":
                self.telemetry_count += 1
            state = self.assets.setdefault(asset, {})
            state["kind"] = group
            state[leaf] = obj
        elif group == "dispatch" and leaf in ("command", "ack"):
            self.assets.setdefault(asset, {})[leaf] = obj

    def _dispatch_lines(self, summary: dict[str, Any]) -> list[str]:
        if not summary:
            waiting = "" if self.dispatch_mode == "off" else "   (waiting for the site summary)"
            return [f"dispatch        {self.dispatch_mode}{waiting}"]
        mode = _shorten(_text(summary, "mode") or "?", 5)
        online, total = _num(summary, "assets_online"), _num(summary, "assets_total")
        kw = {k: _num(summary, k) for k in ("requested_w", "allocated_w", "shortfall_w")}
        flex_c, flex_d = _num(summary, "flex_charge_w"), _num(summary, "flex_discharge_w")
        return [
            f"dispatch        {mode:5} site {_fmt(_num(summary, 'freq_hz'), '.3f')} Hz   "
            f"requested {_fmt(_kw(kw['requested_w']), '+.1f')} / "
            f"allocated {_fmt(_kw(kw['allocated_w']), '+.1f')} / "
            f"shortfall {_fmt(_kw(kw['shortfall_w']), '.1f')} kW",
            f"flexibility     charge {_fmt(_kw(flex_c), '.1f')} kW   "
            f"discharge {_fmt(_kw(flex_d), '.1f')} kW   "
            f"({_fmt(online, '.0f')} of {_fmt(total, '.0f')} assets online)",
        ]

    def render(self, max_rows: int = 40, width: int = 120) -> str:
        """The screen: grid, site and dispatch lines, then one row per asset.

        Each row ends with the asset's last command (its setpoint), the control writer's
        last ack (result) and the command's reason, shortened so the row fits in ``width``
        columns: command, ack and measured power side by side.
        """
        with self.lock:
            grid = dict(self.grid)
            summary = dict(self.summary)
            assets = {k: dict(v) for k, v in sorted(self.assets.items())}
            dead, count = self.deadletters, self.telemetry_count
        out = [f"gridflex demo - site {self.site}   (Ctrl-C stops)", ""]
        out[1:1] = self._banners()
        if grid:
            dev, rocof = _num(grid, "deviation_hz"), _num(grid, "rocof_hz_per_s")
            out.append(
                f"grid frequency  {_fmt(_num(grid, 'mean_hz'), '.3f')} Hz   deviation "
                f"{_fmt(None if dev is None else dev * 1000, '+7.1f')} mHz   RoCoF "
                f"{_fmt(None if rocof is None else rocof * 1000, '+7.1f')} mHz/s   "
                f"({_fmt(_num(grid, 'assets'), '.0f')} assets, "
                f"{_fmt(_num(grid, 'samples'), '.0f')} samples)"
            )
        else:
            out.append("grid frequency  (waiting for the first window)")
        total_w = sum(_num(a.get("telemetry"), "power_w") or 0.0 for a in assets.values())
        out.append(
            f"site power      {total_w / 1000:+9.1f} kW    telemetry messages {count}"
            f"    dead letters {dead}"
        )
        out += self._dispatch_lines(summary)
        out.append("")
        head = (
            f"{'asset':10} {'kind':8} {'status':10} {'power kW':>9} {'SoC %':>6} {'Hz':>7} "
            f"{'cmd kW':>8} {'ack':8}"
        )
        out.append(f"{head} reason" if width - len(head) > 8 else head)
        for name, state in list(assets.items())[:max_rows]:
            out.append(_asset_row(name, state, width))
        if len(assets) > max_rows:
            out.append(f"... and {len(assets) - max_rows} more")
        return "\n".join(out)

    def _banners(self) -> list[str]:
        return [b for b in (self.api_banner, self.app_banner) if b is not None]

    def headline(self) -> str:
        """Grid frequency and dispatch in one line, for a log instead of the screen."""
        lines = self.render(max_rows=0).splitlines()
        skip = len(self._banners())
        return f"{lines[2 + skip]} | {lines[4 + skip]}"


def _kw(value_w: float | None) -> float | None:
    return None if value_w is None else value_w / 1000


def _asset_row(name: str, state: dict[str, Any], width: int) -> str:
    tel, status, command = state.get("telemetry"), state.get("status"), state.get("command")
    ack = state.get("ack")
    row = (
        f"{_shorten(name, 10):10} {_shorten(str(state.get('kind', '?')), 8):8} "
        f"{_shorten(_text(status, 'state') or '?', 10):10} "
        f"{_fmt(_kw(_num(tel, 'power_w')), '+9.2f', ''):>9} "
        f"{_fmt(_num(tel, 'soc_pct'), '.1f', ''):>6} "
        f"{_fmt(_num(tel, 'freq_hz'), '.3f', ''):>7} "
        f"{_fmt(_kw(_num(command, 'setpoint_w')), '+8.2f', ''):>8} "
        f"{_shorten(_text(ack, 'result') or '', 8):8}"
    )
    reason = _text(command, "reason")
    room = width - len(row) - 1
    if reason and room > 8:
        row += " " + _shorten(reason, room)
    return row


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


def _spawn(part: Part, logs: Path) -> None:
    part.log_file = (logs / f"{part.name}.log").open("ab")
    env = None
    if part.mqtt_credentials is not None:
        env = {**os.environ, MQTT_CREDENTIALS_ENV: str(part.mqtt_credentials)}
    part.process = subprocess.Popen(
        [sys.executable, "-m", "gridflex.cli", *part.argv],
        env=env,
        stdout=part.log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the demo only; it stops parts in order
    )
    log.info("started %s (pid %d): gridflex %s", part.name, part.process.pid, " ".join(part.argv))


def _stop(part: Part, timeout_s: float = 15.0) -> int | None:
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


def plan_parts(
    plan: DemoPlan, site_file: Path, frequency_profile: Path | None = None
) -> list[Part]:
    """The demo's processes in start order (each CSMS before its stations)."""
    site = str(site_file)
    parts: list[Part] = []
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
        if frequency_profile is not None:
            sim += ["--frequency-profile", str(frequency_profile.resolve())]
        parts.append(Part("sim-inverters", "simulator", sim))
    if plan.chargers:
        parts.append(Part("collect-ocpp", "collector", ["collect", "ocpp", "--site", site]))
        parts.append(
            Part(
                "sim-chargers",
                "simulator",
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
                    "--nominal-hz",
                    str(plan.nominal_hz),
                    *(
                        ["--frequency-profile", str(frequency_profile.resolve())]
                        if frequency_profile is not None
                        else []
                    ),
                ],
            )
        )
    parts.append(
        Part(
            "pipeline", "pipeline", ["pipeline", "--site", site, "--client-id", PIPELINE_CLIENT_ID]
        )
    )
    if plan.inverters:
        parts.append(Part("collect-modbus", "collector", ["collect", "modbus", "--site", site]))
    if plan.inverters or plan.chargers:
        # The setpoint writer closes the loop: SunSpec 704 for the inverters, OCPP charging
        # profiles through the CSMS for the chargers.
        parts.append(Part("control", "control", ["control", "--site", site]))
    if plan.app_port is not None:
        # The history is the site file's folder (`[history] dir = "."`).
        app = ["app", "--data-dir", str(site_file.parent), "--port", str(plan.app_port)]
        parts.append(Part("app", "app", app))
    return parts


def _stop_all(parts: Sequence[Part]) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for part in stop_order(parts):
        if part.role == "pipeline" and codes:
            time.sleep(_SETTLE_S)
        codes[part.name] = _stop(part)
    return codes


def main(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C, SIGTERM or ``--duration``; returns 0 when all parts stopped."""
    if args.local_droop and args.dispatch == "fcr":
        log.error("--local-droop adds the devices' own droop: use it with --dispatch droop or off")
        return 2
    if args.sites > 1:
        from gridflex.demo_sites import run_sites

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
