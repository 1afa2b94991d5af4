"""``--log-format json``: one JSON object per line, the event fields, no secrets."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridflex.broker import Broker
from gridflex.cli import main
from gridflex.log import JsonFormatter, TextFormatter, redact, setup_logging
from gridflex.net import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.delenv("GRIDFLEX_LOG_FORMAT", raising=False)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("control.service")
    return logger.makeRecord(
        logger.name, logging.ERROR, __file__, 1, msg, args, None, extra=extra or None
    )


def test_a_record_is_one_json_object_with_time_level_component_message() -> None:
    line = JsonFormatter().format(_record("%s: polled %d", "inv1", 3))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["component"] == "control.service"
    assert entry["message"] == "inv1: polled 3"
    assert entry["time"].endswith("Z")
    when = dt.datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    assert when.utcoffset() == dt.timedelta(0)
    assert not {"asset", "event", "fault_code"} & entry.keys()


def test_asset_event_and_fault_code_come_from_extra() -> None:
    record = _record(
        "fault", asset="inv1", event="fault", fault_code="Grid_Sync_Error", password="hunter2"
    )
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["asset"], entry["event"], entry["fault_code"]) == (
        "inv1",
        "fault",
        "Grid_Sync_Error",
    )
    assert "hunter2" not in json.dumps(entry)  # only the known fields are written


def test_an_exception_is_one_field_of_the_same_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "RuntimeError: boom" in json.loads(line)["exception"]


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("broker mqtt://gridflex:s3cr3t-pw@127.0.0.1:1883 unreachable", "s3cr3t-pw"),
        ("mqtts://u:p%40ss@host:8883", "p%40ss"),
        ("Authorization: Bearer tok_ABC.def-123", "tok_ABC.def-123"),
    ],
)
def test_secrets_are_masked_in_both_formats(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert secret not in JsonFormatter().format(_record("%s", text))
    assert secret not in TextFormatter().format(_record("%s", text))
    assert "***" in redact(text)


def test_the_log_format_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    monkeypatch.setenv("GRIDFLEX_LOG_FORMAT", "json")
    setup_logging("INFO")
    assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)
    monkeypatch.setenv("GRIDFLEX_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="xml"):
        setup_logging("INFO")


def test_a_bad_log_format_in_the_environment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
    restore_logging: None,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("GRIDFLEX_LOG_FORMAT", "xml")
    assert main(["query", "--data-dir", str(tmp_path), "select 1"]) == 2
    assert "GRIDFLEX_LOG_FORMAT" in capsys.readouterr().err


def test_the_option_exports_the_format_to_spawned_processes(
    monkeypatch: pytest.MonkeyPatch, restore_logging: None
) -> None:
    setup_logging("INFO", "json")
    assert os.environ["GRIDFLEX_LOG_FORMAT"] == "json"
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    logging.getLogger("gridflex.test").info("hello %s", "world")
    assert json.loads(stream.getvalue())["message"] == "hello world"


@pytest.mark.integration
def test_a_real_command_logs_json_lines_without_the_broker_password(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """``gridflex --log-format json collect ocpp``: every stderr line parses, no secret."""
    port = free_port()
    password = f"pw-{uuid.uuid4().hex}"
    token = f"tok-{uuid.uuid4().hex}"
    site = tmp_path / "site.toml"
    site.write_text(
        f'[site]\nid = "t{uuid.uuid4().hex[:8]}"\n[mqtt]\nurl = "{mosquitto.url}"\n'
        f'username = "gridflex"\npassword = "{password}"\n'
        f'[history]\ndir = "{tmp_path / "h"}"\n[ocpp]\nport = {port}\n',
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridflex.cli", "--log-format", "json", "--log-level", "DEBUG",
         "collect", "ocpp", "--site", str(site)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "GRIDFLEX_API_TOKEN": token},
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert wait_for_port("127.0.0.1", port, timeout_s=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    lines = err.decode().splitlines()
    assert lines
    entries = [json.loads(line) for line in lines]
    assert all({"time", "level", "component", "message"} <= e.keys() for e in entries)
    assert any(e["component"] == "collectors.ocpp.cli" for e in entries)
    assert password not in err.decode()
    assert token not in err.decode()
