"""``gridflex broker-config``: password hashes, files and their modes, the CLI."""

from __future__ import annotations

import base64
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from paho.mqtt.client import topic_matches_sub

from collectors.ocpp.requests import request_filter
from control.ocpp import result_filter
from control.service import command_filter
from gridflex import contract as c
from gridflex.broker_config import (
    ROLES,
    acl_rules,
    acl_text,
    mosquitto_password_hash,
    write_broker_config,
)
from pipelines.flow import pipeline_filters


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd")
def test_password_hash_equals_mosquitto_passwd_for_the_same_salt(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwd), "user", "s3cret-pass"],
        check=True,
        capture_output=True,
    )
    reference = passwd.read_text(encoding="utf-8").strip().split(":", 1)[1]
    _empty, seven, iterations, salt_b64, _hash = reference.split("$")
    assert seven == "7"
    ours = mosquitto_password_hash(
        "s3cret-pass", salt=base64.b64decode(salt_b64), iterations=int(iterations)
    )
    assert ours == reference


def test_password_hash_uses_a_fresh_salt_each_time() -> None:
    assert mosquitto_password_hash("same") != mosquitto_password_hash("same")


def test_acl_has_one_user_per_role_and_no_pattern_for_anonymous() -> None:
    text = acl_text("depot-1")
    users = [line.split()[1] for line in text.splitlines() if line.startswith("user ")]
    assert users == [f"depot-1-{role}" for role in ROLES]
    first_rule = next(i for i, line in enumerate(text.splitlines()) if line.startswith("topic"))
    first_user = next(i for i, line in enumerate(text.splitlines()) if line.startswith("user"))
    assert first_user < first_rule  # a topic line before any user would apply to anonymous


def test_secret_files_are_owner_only_and_rerun_keeps_passwords(tmp_path: Path) -> None:
    files = write_broker_config("s1", tmp_path / "b", bind="127.0.0.1", port=1883)
    assert _mode(files.password_file) == 0o600
    assert _mode(files.acl_file) == 0o600
    assert _mode(files.credentials["pipeline"].parent) == 0o700
    for path in files.credentials.values():
        assert _mode(path) == 0o600
    before = {r: p.read_text(encoding="utf-8") for r, p in files.credentials.items()}
    again = write_broker_config("s1", tmp_path / "b", bind="127.0.0.1", port=1883)
    assert {r: p.read_text(encoding="utf-8") for r, p in again.credentials.items()} == before
    rotated = write_broker_config("s1", tmp_path / "b", bind="127.0.0.1", port=1883, rotate=True)
    after = {r: p.read_text(encoding="utf-8") for r, p in rotated.credentials.items()}
    assert all(after[r] != before[r] for r in ROLES)


def test_conf_refuses_anonymous_and_names_its_files(tmp_path: Path) -> None:
    files = write_broker_config("s1", tmp_path, bind="0.0.0.0", port=8883)
    conf = files.conf.read_text(encoding="utf-8").splitlines()
    assert "allow_anonymous false" in conf
    assert f"password_file {files.password_file.resolve()}" in conf
    assert f"acl_file {files.acl_file.resolve()}" in conf
    assert "listener 8883 0.0.0.0" in conf
    assert not any(line.startswith("certfile") for line in conf)


def test_loose_credentials_file_from_an_earlier_run_is_refused(tmp_path: Path) -> None:
    files = write_broker_config("s1", tmp_path, bind="127.0.0.1", port=1883)
    files.credentials["control"].chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        write_broker_config("s1", tmp_path, bind="127.0.0.1", port=1883)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridflex.cli", *args], capture_output=True, text=True, check=False
    )


def test_cli_writes_the_files_and_logs_no_password(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[site]\nid = "s1"\n[mqtt]\nurl = "mqtt://127.0.0.1:18830"\n', "utf-8")
    done = _cli("broker-config", "--site", str(site), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    conf = (tmp_path / "out" / "mosquitto.conf").read_text(encoding="utf-8")
    assert "listener 18830 127.0.0.1" in conf
    for role in ROLES:
        creds = tomllib.loads((tmp_path / "out" / "credentials" / f"{role}.toml").read_text())
        assert creds["username"] == f"s1-{role}"
        assert creds["password"] not in done.stderr + done.stdout


def test_cli_wants_a_certificate_for_an_mqtts_url(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[site]\nid = "s1"\n[mqtt]\nurl = "mqtts://broker.example:8883"\n', "utf-8")
    done = _cli("broker-config", "--site", str(site), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "--tls-cert and --tls-key" in done.stderr


def _grants(role: str, access: str, topic: str) -> bool:
    return any(a == access and topic_matches_sub(f, topic) for a, f in acl_rules("s1")[role])


def test_acl_grants_every_topic_the_parts_publish_and_subscribe() -> None:
    def concrete(topic_filter: str) -> str:
        return topic_filter.replace("+", "x")

    writes = {
        "collector": [
            c.telemetry_topic("s1", "inverter", "a"),
            c.telemetry_topic("s1", "evse", "a"),
            c.status_topic("s1", "inverter", "a"),
            c.status_topic("s1", "evse", "a"),
            c.collector_topic("s1", "modbus"),
            c.collector_topic("s1", "ocpp"),
            c.session_topic("s1", "a"),
            c.csms_result_topic("s1", "a"),
            c.deadletter_topic("modbus"),
            c.deadletter_topic("ocpp"),
            c.event_topic("s1", "collect-ocpp"),
            c.event_topic("s1", "collect-modbus"),
        ],
        "pipeline": [
            c.grid_frequency_topic("s1"),
            c.forecast_topic("s1", "a"),
            c.command_topic("s1", "a"),
            c.summary_topic("s1"),
            c.deadletter_topic("pipeline"),
        ],
        "control": [
            c.ack_topic("s1", "a"),
            c.csms_request_topic("s1", "a"),
            c.deadletter_topic("control"),
            c.event_topic("s1", "control"),
        ],
    }
    reads = {
        "collector": [request_filter("s1")],
        "pipeline": list(pipeline_filters("s1")),
        "control": [
            command_filter("s1"),
            result_filter("s1"),
            "gridflex/v1/s1/+/+/telemetry",
            "gridflex/v1/s1/+/+/status",
            c.collector_topic("s1", "ocpp"),
        ],
    }
    for role, topics in writes.items():
        for topic in topics:
            assert _grants(role, "write", topic), (role, topic)
            assert _grants("integrator", "read", topic), topic
            assert not _grants("integrator", "write", topic), topic
    for role, filters in reads.items():
        for topic_filter in filters:
            assert _grants(role, "read", concrete(topic_filter)), (role, topic_filter)
    # and what each must not do
    assert not _grants("collector", "write", c.command_topic("s1", "a"))
    assert not _grants("pipeline", "write", c.telemetry_topic("s1", "inverter", "a"))
    assert not _grants("control", "write", c.command_topic("s1", "a"))
    assert not _grants("collector", "read", c.telemetry_topic("s1", "inverter", "a"))
    assert not _grants("control", "write", c.session_topic("s1", "a"))
    assert not _grants("pipeline", "write", c.status_topic("s1", "evse", "a"))
    # events: each writer under its own component, the pipeline only reads them
    assert _grants("pipeline", "read", c.event_topic("s1", "control"))
    assert not _grants("pipeline", "write", c.event_topic("s1", "control"))
    assert not _grants("collector", "write", c.event_topic("s1", "control"))
    assert not _grants("control", "write", c.event_topic("s1", "collect-ocpp"))
    assert not _grants("control", "write", c.event_topic("s2", "control"))
