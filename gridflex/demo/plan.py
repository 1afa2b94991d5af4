"""What the demo runs and the site file it writes: :class:`DemoPlan`, :func:`site_toml`.

Also what a run writes into its data directory (:data:`DEMO_DIRS`, :data:`DEMO_FILES`), all
that :func:`clear_history` removes before a fresh run.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gridflex.contract import DispatchMode
from gridflex.history import STREAMS

__all__ = [
    "DEMO_DIRS",
    "DEMO_FILES",
    "EVSE_RATING_W",
    "INVERTER_CAPACITY_WH",
    "INVERTER_RATING_W",
    "MAX_DEMO_DEVICES",
    "PIPELINE_CLIENT_ID",
    "SITE_ID",
    "DemoPlan",
    "clear_history",
    "site_toml",
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
