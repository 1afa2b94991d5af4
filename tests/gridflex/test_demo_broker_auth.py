"""``gridflex demo`` with its own Mosquitto: users per role, ACL, anonymous refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from gridflex.broker import find_mosquitto
from gridflex.broker_config import ROLES, read_credentials
from tests.mqtt_helpers import Subscriber, connack_code

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="needs mosquitto"),
]


def _wait(condition: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_demo_broker_refuses_anonymous_and_every_part_works_with_its_role(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "GRIDFLEX_MQTT_CREDENTIALS"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gridflex.cli",
            "demo",
            "--inverters",
            "1",
            "--chargers",
            "1",
            "--duration",
            "25",
            "--no-ui",
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        site_file = data_dir / "site.toml"
        assert _wait(site_file.exists), "the demo wrote no site file"
        site = tomllib.loads(site_file.read_text(encoding="utf-8"))
        url = site["mqtt"]["url"]
        assert "username" not in site["mqtt"] and "password" not in site["mqtt"]
        assert connack_code(url, None, None) != 0  # anonymous: refused
        viewer = read_credentials(data_dir / "broker" / "credentials" / "integrator.toml")
        assert connack_code(url, viewer.username, viewer.password + "-wrong") != 0
        # The integrator's read-only view shows every part at work: collectors' telemetry
        # of both kinds, the pipeline's commands and control's acks.
        sub = Subscriber(url, "gridflex/v1/#", username=viewer.username, password=viewer.password)
        try:
            assert sub.wait_for(
                lambda msgs: (
                    {"inverter", "evse"}
                    <= {t.split("/")[3] for t, _ in msgs if t.endswith("/telemetry")}
                    and any(t.endswith("/command") for t, _ in msgs)
                    and any(t.endswith("/ack") for t, _ in msgs)
                ),
                timeout_s=60,
            ), sorted({t for t, _ in sub.messages})[:20]
        finally:
            sub.close()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    logs = "".join(p.read_text(errors="replace") for p in (data_dir / "logs").glob("*.log"))
    for role in ROLES:
        secret = read_credentials(data_dir / "broker" / "credentials" / f"{role}.toml").password
        assert secret not in logs + out.decode(errors="replace") + err.decode(errors="replace")
