"""``gridflex central`` under systemd: its unit, and the notify protocol with a fake socket."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridflex.broker import Broker
from gridflex.cli import build_parser
from gridflex.demo.sites import central_toml
from tests.gridflex.test_systemd import FakeSystemd
from tests.gridflex.test_systemd_units import INSTALLED_BIN, UNITS, _one, parse_unit

ROOT = Path(__file__).resolve().parents[2]
UNIT = UNITS / "gridflex-central.service"


def test_the_unit_is_notify_with_watchdog_hardening_and_its_credentials() -> None:
    unit = parse_unit(UNIT)
    for (section, key), value in {
        ("Service", "Type"): "notify",
        ("Service", "NotifyAccess"): "main",
        ("Service", "Restart"): "on-failure",
        ("Service", "DynamicUser"): "yes",
        ("Service", "ProtectSystem"): "strict",
        ("Service", "NoNewPrivileges"): "yes",
        ("Install", "WantedBy"): "multi-user.target",
    }.items():
        assert _one(unit, section, key) == value, f"[{section}] {key}"
    assert _one(unit, "Service", "WatchdogSec").endswith("s")
    assert "PartOf" not in unit["Unit"]  # the central machine, not a gateway
    assert (
        "mqtt-credentials:/etc/gridflex/credentials/central.toml"
        in (unit["Service"]["LoadCredential"])
    )
    argv = shlex.split(_one(unit, "Service", "ExecStart"))
    assert argv[0] == INSTALLED_BIN
    assert build_parser(argv[1:]).parse_args(argv[1:])._module == "gridflex.central"


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    gridflex = Path(sys.executable).with_name("gridflex")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(INSTALLED_BIN, str(gridflex)))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@pytest.fixture
def notify_socket() -> Iterator[FakeSystemd]:
    fake = FakeSystemd(f"@gridflex-test-{uuid.uuid4().hex}")
    yield fake
    fake.close()


@pytest.mark.integration
def test_central_is_ready_once_connected_pings_while_rounds_go_on_and_stops(
    mosquitto: Broker, tmp_path: Path, notify_socket: FakeSystemd
) -> None:
    config = tmp_path / "central.toml"
    config.write_text(central_toml([f"s{uuid.uuid4().hex[:6]}"], mosquitto.url, 1_000))
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_PID", "NOTIFY_SOCKET")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "NOTIFY_SOCKET": notify_socket.address,
        "WATCHDOG_USEC": "1000000",  # pings every 0.5 s; stall time 10 s
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridflex.cli", "central", "--config", str(config)],
        cwd=ROOT,
        env=env,
    )
    try:
        assert notify_socket.wait_for("READY=1"), notify_socket.lines()
        assert notify_socket.wait_for("WATCHDOG=1", count=25)  # past the stall time
        assert not any(line.startswith("STATUS=unhealthy") for line in notify_socket.lines())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        notify_socket.drain(1.0)
        assert "STOPPING=1" in notify_socket.lines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
