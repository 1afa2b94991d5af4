"""Fault codes: the standard names, the log line's fields, ``event/1`` on MQTT, the history."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from gridflex import events
from gridflex.broker import Broker
from gridflex.contract import (
    DETAIL_LIMIT,
    EventReport,
    event_filter,
    event_topic,
    parse_payload,
)
from gridflex.net import free_port, wait_for_port
from tests.mqtt_helpers import Subscriber
from tests.pipelines.helpers import create_session, publish_all, wait_until

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


class FakeClient:
    """An MQTT client's ``publish``: keeps what it is given and the thread it ran on."""

    def __init__(self, *, accept: bool = True) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []
        self.threads: list[int] = []
        self.accept = accept

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        self.sent.append((topic, payload, qos, retain))
        self.threads.append(threading.get_ident())
        return self.accept


@pytest.fixture
def client() -> Iterator[FakeClient]:
    fake = FakeClient()
    assert events.configure(fake, "s1", "control") is not None
    yield fake
    events.configure(None, "s1", "control")


def test_a_reported_fault_is_logged_with_its_fields_and_published_as_an_event(
    client: FakeClient, caplog: pytest.LogCaptureFixture
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
    ((topic, payload, qos, retain),) = client.sent
    assert (topic, qos, retain) == ("gridflex/v1/s1/event/control", 1, False)
    report = parse_payload(payload)
    assert isinstance(report, EventReport)
    assert report.model_dump(exclude={"event_id"}) == {
        "schema_": "event/1",
        "site": "s1",
        "component": "control",
        "asset": "inv1",
        "ts_ms": T0_MS,
        "event": "fault",
        "fault_code": "0x04",
        "detail": "Error 0x04",
    }


def test_every_event_gets_its_own_id(client: FakeClient) -> None:
    for asset in ("a", "b", "c"):
        events.report(logging.getLogger("x"), asset, "Grid_Sync_Error", "fault %s", ts_ms=T0_MS)
    ids = {parse_payload(p).event_id for _t, p, _q, _r in client.sent}  # type: ignore[attr-defined]
    assert len(ids) == 3


def test_a_repeat_within_the_window_is_neither_published_nor_logged_again(
    client: FakeClient, caplog: pytest.LogCaptureFixture
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
    times = [parse_payload(p).ts_ms for _t, p, _q, _r in client.sent]  # type: ignore[attr-defined]
    assert times == [T0_MS, T0_MS + 61_000]


def test_without_a_publisher_a_fault_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    events.configure(None, "s1", "control")
    with caplog.at_level(logging.INFO):
        events.report(logging.getLogger("x"), "a", "Grid_Sync_Error", "fault %s")
    assert caplog.records[0].fault_code == "Grid_Sync_Error"  # type: ignore[attr-defined]


def test_an_asset_id_outside_the_contract_is_logged_not_published_nor_raised(
    client: FakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        code = events.report(logging.getLogger("x"), "bad asset/1", "0x04", "fault %s")
    assert code == "0x04"
    assert client.sent == []
    assert any(r.getMessage() == "fault 0x04" for r in caplog.records)


def test_overlong_texts_are_cut_to_what_the_contract_allows(client: FakeClient) -> None:
    events.report(logging.getLogger("x"), "a", "E" * 300, "fault %s", detail="d" * 5000)
    report = parse_payload(client.sent[0][1])
    assert isinstance(report, EventReport)
    assert report.fault_code == "E" * 128
    assert report.detail is not None
    assert len(report.detail) == DETAIL_LIMIT


def test_a_report_from_another_thread_is_published_on_the_clients_loop() -> None:
    """An asyncio client is only called from its loop: a worker thread's report goes there."""
    fake = FakeClient()
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    try:

        async def _configure() -> None:
            events.configure(fake, "s1", "collect-ocpp")

        asyncio.run_coroutine_threadsafe(_configure(), loop).result(10)
        events.report(logging.getLogger("x"), "evse1", "GroundFault", "fault %s")
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(10)  # drain call_soon
        assert len(fake.sent) == 1
        assert fake.threads == [loop_thread.ident]
        assert fake.sent[0][0] == "gridflex/v1/s1/event/collect-ocpp"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(10)
        loop.close()
        events.configure(None, "s1", "control")


def _raw_copies(history: Path, event_id: str) -> int:
    """Rows stored for ``event_id`` in the ``events`` files (before the view's de-duplication)."""
    files = sorted(history.glob("events/date=*/part-*.parquet"))
    if not files:
        return 0
    con = duckdb.connect()
    try:
        paths = [f.as_posix() for f in files]
        query = "select count(*) from read_parquet(?, union_by_name = true) where event_id = ?"
        return int(con.execute(query, [paths, event_id]).fetchall()[0][0])
    finally:
        con.close()


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.integration
def test_a_ground_fault_at_a_station_reaches_the_pipelines_history_once(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """Station → CSMS → ``event/1`` on MQTT → ``gridflex pipeline`` → ``gridflex query``.

    The pipeline starts after the fault was published (its persistent session keeps it),
    and the event is then delivered a second time: the history holds two copies, the
    ``events`` view one row.
    """
    port = free_port()
    history = tmp_path / "history"
    site_id = f"t{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site.toml"
    site.write_text(
        f'[site]\nid = "{site_id}"\n[mqtt]\nurl = "{mosquitto.url}"\n'
        f'[history]\ndir = "{history}"\n[ocpp]\nport = {port}\nmeter_interval_s = 0.5\n'
        '[[assets]]\nid = "evse1"\nkind = "evse"\nstation_id = "sim-cs-0001"\n'
        'password = "station-password-0123"\nmax_charge_w = 22000\nmax_discharge_w = 11000\n',
        encoding="utf-8",
    )
    create_session(mosquitto.url, f"gridflex-pipeline-{site_id}-0", event_filter(site_id))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "gridflex.cli"]
    csms = sim = pipeline = None
    try:
        with Subscriber(mosquitto.url, event_filter(site_id)) as seen:
            csms = subprocess.Popen(
                [*cli, "collect", "ocpp", "--site", str(site)], cwd=ROOT, env=env
            )
            assert wait_for_port("127.0.0.1", port, timeout_s=30)
            sim = subprocess.Popen(
                [*cli, "sim", "chargers", "--site", str(site),
                 "--csms-url", f"ws://127.0.0.1:{port}/ocpp", "--ocpp", "2.0.1",
                 "--ground-fault-after-s", "1"],
                cwd=ROOT, env=env,
            )  # fmt: skip

            def ground_faults() -> list[tuple[str, bytes]]:
                return [
                    (t, p) for t, p in seen.messages if json.loads(p).get("fault_code") == "0x04"
                ]

            assert seen.wait_for(lambda _msgs: bool(ground_faults()), timeout_s=60)
            topic, payload = ground_faults()[0]
        assert topic == event_topic(site_id, "collect-ocpp")
        report = parse_payload(payload)
        assert isinstance(report, EventReport)
        assert not history.exists()  # the CSMS wrote nothing itself

        pipeline = subprocess.Popen([*cli, "pipeline", "--site", str(site)], cwd=ROOT, env=env)
        assert wait_until(lambda: _raw_copies(history, report.event_id) == 1, timeout_s=60)
        publish_all(mosquitto.url, [(topic, payload)])  # the same event, delivered again
        assert wait_until(lambda: _raw_copies(history, report.event_id) == 2, timeout_s=60)
    finally:
        for proc in (sim, csms, pipeline):
            _stop(proc)
    out = subprocess.run(
        [*cli, "query", "--data-dir", str(history),
         "select asset, component, event, fault_code, event_id from events"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [line for line in out.stdout.splitlines()[1:] if report.event_id in line]
    assert rows == [f"evse1,collect-ocpp,{report.event}," + f"0x04,{report.event_id}"]
