"""The demo's processes: which it starts (:func:`plan_parts`), how, and in what order they stop.

Each part is ``python -m gridflex.cli ...`` in its own session, its output in
``DATA/logs/{part}.log``; :func:`stop_order` stops producers before their consumers.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Literal

from gridflex.broker_config import Role as BrokerRole
from gridflex.config import MQTT_CREDENTIALS_ENV
from gridflex.demo.plan import PIPELINE_CLIENT_ID, DemoPlan

__all__ = ["Part", "Role", "plan_parts", "stop_order"]

log = logging.getLogger(__name__)

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
    "app": "integrator",  # reads the history, and the broker (read only) for the live Fleet
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
        # The history is the site file's folder (`[history] dir = "."`); the site file's
        # broker feeds the live Fleet page.
        app = ["app", "--data-dir", str(site_file.parent), "--site", site]
        app += ["--port", str(plan.app_port)]
        parts.append(Part("app", "app", app))
    return parts


def _stop_all(parts: Sequence[Part]) -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for part in stop_order(parts):
        if part.role == "pipeline" and codes:
            time.sleep(_SETTLE_S)
        codes[part.name] = _stop(part)
    return codes
