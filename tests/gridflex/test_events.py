"""Fault codes: the standard names, the log line's fields, the ``events`` history stream."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridflex import events
from gridflex.broker import Broker
from gridflex.history import connect
from gridflex.net import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
T0_MS = 1_780_000_000_000


@pytest.mark.parametrize(
    ("raw", "standard"),
    [
        ("ISO_V2G_MSG_TIMEOUT", "ISO_V2G_MSG_TIMEOUT"),
        ("iso-v2g-msg-timeout", "ISO_V2G_MSG_TIMEOUT"),
        ("Grid_Sync_Error", "Grid_Sync_Error"),
        ("GridSyncError", "Grid_Sync_Error"),
        ("Error 0x04", "0x04"),
        ("0x04", "0x04"),
        ("GroundFault", "0x04"),
        ("max capacity reached", "Max Capacity Reached"),
        ("OvercurrentFault", "OvercurrentFault"),  # not a standard code: kept as written
    ],
)
def test_device_spellings_map_to_the_standard_fault_codes(raw: str, standard: str) -> None:
    assert events.fault_code(raw) == standard


@pytest.fixture
def event_log(tmp_path: Path) -> Iterator[events.EventLog]:
    log = events.configure(tmp_path, "s1", "control")
    assert log is not None
    yield log
    events.configure(None, "s1", "control")


def test_a_reported_fault_is_logged_with_its_fields_and_queryable(
    event_log: events.EventLog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("control.service")
    with caplog.at_level(logging.INFO):
        code = events.report(
            logger, "inv1", "Error 0x04", "%s: fault latched: %s", "inv1", ts_ms=T0_MS
        )
    assert code == "0x04"
    (record,) = caplog.records
    assert record.getMessage() == "inv1: fault latched: 0x04"
    assert (record.asset, record.event, record.fault_code) == ("inv1", "fault", "0x04")  # type: ignore[attr-defined]
    event_log.close()
    rows = (
        connect(tmp_path)
        .execute("select site, asset, ts_ms, component, event, fault_code, detail from events")
        .fetchall()
    )
    assert rows == [("s1", "inv1", T0_MS, "control", "fault", "0x04", "Error 0x04")]


def test_a_repeat_within_the_window_is_neither_recorded_nor_logged_again(
    event_log: events.EventLog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("control.writer")
    with caplog.at_level(logging.INFO):
        for i in range(5):
            events.report(
                logger, "ev1", "max capacity reached", "%s rejected: %s", "c",
                event="limit", level=logging.WARNING, ts_ms=T0_MS + i * 1000,
            )  # fmt: skip
        events.report(logger, "ev1", "max capacity reached", "%s rejected: %s", "c",
                      event="limit", ts_ms=T0_MS + 61_000)  # fmt: skip
    assert len(caplog.records) == 2
    event_log.close()
    rows = connect(tmp_path).execute("select ts_ms from events order by 1").fetchall()
    assert rows == [(T0_MS,), (T0_MS + 61_000,)]


def test_without_an_event_log_a_fault_is_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events.configure(None, "s1", "control")
    with caplog.at_level(logging.INFO):
        events.report(logging.getLogger("x"), "a", "Grid_Sync_Error", "fault %s")
    assert caplog.records[0].fault_code == "Grid_Sync_Error"  # type: ignore[attr-defined]
    assert not (tmp_path / "events").exists()


@pytest.mark.integration
def test_a_ground_fault_at_a_station_is_queryable_as_an_event(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """Simulated station → CSMS (``gridflex collect ocpp``) → ``events`` → ``gridflex query``."""
    port = free_port()
    history = tmp_path / "history"
    site = tmp_path / "site.toml"
    site.write_text(
        f'[site]\nid = "t{uuid.uuid4().hex[:8]}"\n[mqtt]\nurl = "{mosquitto.url}"\n'
        f'[history]\ndir = "{history}"\n[ocpp]\nport = {port}\nmeter_interval_s = 0.5\n'
        '[[assets]]\nid = "evse1"\nkind = "evse"\nstation_id = "sim-cs-0001"\n'
        'password = "station-password-0123"\nmax_charge_w = 22000\nmax_discharge_w = 11000\n',
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    csms = subprocess.Popen(
        [sys.executable, "-m", "gridflex.cli", "collect", "ocpp", "--site", str(site)],
        cwd=ROOT, env=env,
    )  # fmt: skip
    sim = None
    try:
        assert wait_for_port("127.0.0.1", port, timeout_s=30)
        sim = subprocess.Popen(
            [sys.executable, "-m", "gridflex.cli", "sim", "chargers", "--site", str(site),
             "--csms-url", f"ws://127.0.0.1:{port}/ocpp", "--ocpp", "2.0.1",
             "--ground-fault-after-s", "1"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        rows: list[tuple[object, ...]] = []
        while time.monotonic() < deadline and not rows:
            time.sleep(0.5)
            rows = (
                connect(history)
                .execute(
                    "select asset, component, fault_code from events where fault_code = '0x04'"
                )
                .fetchall()
            )
    finally:
        for proc in (sim, csms):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    assert ("evse1", "collect-ocpp", "0x04") in rows
    out = subprocess.run(
        [sys.executable, "-m", "gridflex.cli", "query", "--data-dir", str(history),
         "select fault_code, count(*) n from events group by 1 order by 1"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "0x04," in out.stdout
