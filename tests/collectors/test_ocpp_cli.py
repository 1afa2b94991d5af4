"""``gridflex collect ocpp`` and ``gridflex sim chargers`` as processes: start, report, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from gridflex.broker import Broker
from gridflex.net import free_port, wait_for_port
from tests.mqtt_helpers import Subscriber

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "station-password-0123"


def site_file(tmp_path: Path, site: str, mqtt_url: str, port: int, extra_ocpp: str = "") -> Path:
    assets = "".join(
        f'[[assets]]\nid = "evse{n}"\nkind = "evse"\nstation_id = "sim-cs-{n:04d}"\n'
        f'password = "{PASSWORD}"\nmax_charge_w = 22000\nmax_discharge_w = 11000\n\n'
        for n in (1, 2)
    )
    path = tmp_path / "site.toml"
    path.write_text(
        f'[site]\nid = "{site}"\n\n[mqtt]\nurl = "{mqtt_url}"\n\n'
        f"[ocpp]\nport = {port}\nmeter_interval_s = 0.5\n{extra_ocpp}\n{assets}",
        encoding="utf-8",
    )
    return path


def gridflex(*args: str, module: str = "gridflex.cli") -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("baseline", [False, True], ids=["command", "paho-baseline"])
def test_collect_and_sim_commands_report_and_exit_0_on_sigterm(
    mosquitto: Broker, tmp_path: Path, baseline: bool
) -> None:
    """The command, and the benchmarks' paho baseline built on the same CSMS."""
    site = f"t{uuid.uuid4().hex[:8]}"
    port = free_port()
    path = site_file(tmp_path, site, mosquitto.url, port)
    with Subscriber(mosquitto.url, f"gridflex/v1/{site}/#") as sub:
        if baseline:
            csms = gridflex(
                "collect-ocpp", "--mqtt", "paho", "--site", str(path), module="bench.baselines"
            )
        else:
            csms = gridflex("collect", "ocpp", "--site", str(path))
        sim = None
        try:
            assert wait_for_port("127.0.0.1", port, timeout_s=20)
            sim = gridflex(
                "sim", "chargers", "--site", str(path), "--csms-url", f"ws://127.0.0.1:{port}/ocpp",
                "--ocpp", "mix", "--seed", "3",
            )  # fmt: skip
            assert sub.wait_for(
                lambda m: all(
                    sum(t.endswith(f"evse{n}/telemetry") for t, _ in m) >= 3 for n in (1, 2)
                ),
                timeout_s=30,
            )
        finally:
            sim_code = stop(sim) if sim is not None else None
            csms_code = stop(csms)
        assert sim_code == 0
        assert csms_code == 0, csms.stderr.read() if csms.stderr else ""
    with Subscriber(mosquitto.url, f"gridflex/v1/{site}/+/+/status") as late:  # retained
        assert late.wait_for(lambda m: len(m) >= 3)
        retained = {t: json.loads(p) for t, p in late.messages}
    assert retained[f"gridflex/v1/{site}/collector/ocpp/status"]["online"] is False
    assert retained[f"gridflex/v1/{site}/evse/evse1/status"]["online"] is False


@pytest.mark.integration
def test_collect_refuses_a_world_readable_tls_key_with_exit_2(tmp_path: Path) -> None:
    key = tmp_path / "csms.key"
    cert = tmp_path / "csms.crt"
    key.write_text("not used")
    cert.write_text("not used")
    os.chmod(key, 0o644)
    extra = f'security_profile = 2\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
    path = site_file(tmp_path, "tkey", f"mqtt://127.0.0.1:{free_port()}", free_port(), extra)
    proc = gridflex("collect", "ocpp", "--site", str(path))
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    message = err.decode()
    assert "ocpp.tls_key" in message
    assert "chmod 600" in message
