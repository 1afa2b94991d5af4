"""The units in deploy/systemd: systemd-analyze accepts them, and they say what they must."""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gridflex.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
SERVICES = (
    "gridflex-collect-modbus",
    "gridflex-collect-ocpp",
    "gridflex-pipeline",
    "gridflex-control",
    "gridflex-app",
)
TARGET = "v2g-gateway.target"
#: Template units (one instance per shard or cluster process) → an instance of each.
TEMPLATES = {"gridflex-collect-modbus@": "1-2", "gridflex-pipeline@": "1"}
#: What the pipeline template reads from /etc/gridflex/gridflex.env, for the tests.
ADDRESSES = "127.0.0.1:2101,127.0.0.1:2102"
INSTALLED_BIN = "/opt/gridflex/venv/bin/gridflex"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """Sections → key → every value (a key may repeat, as systemd allows)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not key=value"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def _one(unit: Unit, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert values, f"[{section}] {key} missing"
    return values[-1]


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_is_notify_with_watchdog_restart_and_hardening(name: str) -> None:
    unit = parse_unit(UNITS / f"{name}.service")
    expected = {
        ("Service", "Type"): "notify",
        ("Service", "NotifyAccess"): "main",
        ("Service", "Restart"): "on-failure",
        ("Service", "DynamicUser"): "yes",
        ("Service", "ProtectSystem"): "strict",
        ("Service", "ProtectHome"): "yes",
        ("Service", "NoNewPrivileges"): "yes",
        ("Service", "PrivateTmp"): "yes",
        ("Service", "ConfigurationDirectory"): "gridflex",
        ("Service", "CapabilityBoundingSet"): "",
        ("Unit", "PartOf"): TARGET,
        ("Install", "WantedBy"): TARGET,
    }
    for (section, key), value in expected.items():
        assert _one(unit, section, key) == value, f"{name}: [{section}] {key}"
    assert _one(unit, "Service", "WatchdogSec").endswith("s")
    assert "gridflex" in _one(unit, "Service", "StateDirectory").split()
    assert int(_one(unit, "Unit", "StartLimitBurst")) > 0
    assert int(_one(unit, "Unit", "StartLimitIntervalSec")) > 0


@pytest.mark.parametrize("name", SERVICES)
def test_mqtt_services_come_after_mosquitto_and_load_their_credentials(name: str) -> None:
    unit = parse_unit(UNITS / f"{name}.service")
    assert "mosquitto.service" in _one(unit, "Unit", "After").split()
    credentials = unit["Service"].get("LoadCredential", [])
    assert any(c.startswith("mqtt-credentials:/etc/gridflex/credentials/") for c in credentials)


def test_the_app_reads_the_broker_as_the_read_only_integrator() -> None:
    unit = parse_unit(UNITS / "gridflex-app.service")
    credentials = unit["Service"]["LoadCredential"]
    assert "mqtt-credentials:/etc/gridflex/credentials/integrator.toml" in credentials
    argv = shlex.split(_one(unit, "Service", "ExecStart"))
    assert argv[argv.index("--site") + 1] == "/etc/gridflex/site.toml"


def test_control_loads_the_api_token_credential() -> None:
    unit = parse_unit(UNITS / "gridflex-control.service")
    assert "api-token:/etc/gridflex/credentials/api-token" in unit["Service"]["LoadCredential"]


@pytest.mark.parametrize("name", SERVICES)
def test_exec_start_is_a_valid_gridflex_command_line(name: str) -> None:
    argv = shlex.split(_one(parse_unit(UNITS / f"{name}.service"), "Service", "ExecStart"))
    assert argv[0] == INSTALLED_BIN
    args = build_parser(argv[1:]).parse_args(argv[1:])  # exits (fails the test) when invalid
    assert args._module in {
        "collectors.modbus",
        "collectors.ocpp",
        "pipelines.cli",
        "control.cli",
        "gridflex.app_cmd",
    }


def instantiate(template: str, instance: str) -> str:
    """The template's text as systemd reads instance ``instance`` (its %i, %I, environment)."""
    text = (UNITS / f"{template}.service").read_text(encoding="utf-8")
    unescaped = instance.replace("-", "/")  # what systemd-escape made of the instance
    return (
        text.replace("%I", unescaped)
        .replace("%i", instance)
        .replace("${GRIDFLEX_PIPELINE_ADDRESSES}", ADDRESSES)
    )


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_template_unit_is_its_single_unit_but_for_the_instance_options(
    template: str, tmp_path: Path
) -> None:
    single = parse_unit(UNITS / f"{template.rstrip('@')}.service")
    path = tmp_path / f"{template}{TEMPLATES[template]}.service"
    path.write_text(instantiate(template, TEMPLATES[template]), encoding="utf-8")
    instance = parse_unit(path)
    differs = {
        (section, key)
        for section in single.keys() | instance.keys()
        for key in single.get(section, {}).keys() | instance.get(section, {}).keys()
        if single.get(section, {}).get(key) != instance.get(section, {}).get(key)
    }
    # the same hardening, credentials, watchdog and target: only these may differ
    assert differs <= {
        ("Unit", "Description"),
        ("Service", "ExecStart"),
        ("Service", "EnvironmentFile"),
    }
    assert ("Service", "ExecStart") in differs


def parsed_exec_start(unit_text: str) -> argparse.Namespace:
    """The unit's ``ExecStart`` as ``gridflex``'s parser reads it (exits when invalid)."""
    exec_start = next(line for line in unit_text.splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    return build_parser(argv[1:]).parse_args(argv[1:])


def test_a_collector_shard_instance_runs_its_shard() -> None:
    args = parsed_exec_start(instantiate("gridflex-collect-modbus@", "1-2"))
    assert args._module == "collectors.modbus"
    assert (args.shard.index, args.shard.count) == (1, 2)


def test_a_pipeline_instance_runs_its_cluster_process_and_needs_the_addresses() -> None:
    unit_text = instantiate("gridflex-pipeline@", "1")
    args = parsed_exec_start(unit_text)
    assert args._module == "pipelines.cli"
    assert (args.process_id, args.addresses) == (1, ADDRESSES)
    # the environment file is required (no "-"): without the addresses the unit does not start
    assert "EnvironmentFile=/etc/gridflex/gridflex.env" in unit_text.splitlines()


def test_the_target_wants_every_service() -> None:
    target = parse_unit(UNITS / TARGET)
    wanted = set(" ".join(target["Unit"]["Wants"]).split())
    assert wanted == {f"{s}.service" for s in SERVICES}


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    gridflex = Path(sys.executable).with_name("gridflex")
    assert gridflex.exists(), "the venv's gridflex script stands in for the installed one"
    for unit in [*(f"{s}.service" for s in SERVICES), TARGET]:
        text = (UNITS / unit).read_text(encoding="utf-8")
        (tmp_path / unit).write_text(text.replace(INSTALLED_BIN, str(gridflex)), encoding="utf-8")
    for template, instance in TEMPLATES.items():
        text = instantiate(template, instance).replace(INSTALLED_BIN, str(gridflex))
        # verify cannot read the (absent) environment file: drop it, the value is inlined
        text = text.replace("EnvironmentFile=/etc/gridflex/gridflex.env", "")
        (tmp_path / f"{template}{instance}.service").write_text(text, encoding="utf-8")
    units = sorted(str(p) for p in tmp_path.iterdir())
    result = subprocess.run(
        [analyze, "verify", "--man=no", *units], capture_output=True, text=True, check=False
    )
    # unknown keys and bad values are only warnings: any output is a failure here
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
