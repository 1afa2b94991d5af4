"""Asset statuses, sessions and fault events through real Mosquitto and the real pipeline."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from bytewax.testing import run_main

from gridflex.broker import Broker
from gridflex.contract import (
    AssetStatus,
    ChargingSession,
    EventReport,
    deadletter_topic,
    event_topic,
    session_topic,
    status_topic,
)
from gridflex.history import connect
from gridflex.mqtt import MqttClient
from pipelines.flow import FlowOptions, build_flow, pipeline_filters
from tests.mqtt_helpers import Subscriber
from tests.pipelines.helpers import create_session, history_count, make_site, wait_until

pytestmark = pytest.mark.integration


def publish(url: str, messages: list[tuple[str, bytes, bool]]) -> None:
    client = MqttClient(url, f"test-pub-{uuid.uuid4().hex[:8]}", clean_session=True)
    client.start()
    assert client.wait_connected(10)
    for topic, payload, retain in messages:
        assert client.publish(topic, payload, qos=1, retain=retain)
    assert client.flush(10)
    client.stop()


def status(site: str, asset: str, kind: str, ts_ms: int, **fields: Any) -> AssetStatus:
    values: dict[str, Any] = {"online": True, "state": "online", **fields}
    return AssetStatus(site=site, asset=asset, kind=kind, ts_ms=ts_ms, boot="b1", **values)  # type: ignore[arg-type]


def test_status_changes_and_sessions_reach_their_views_once(
    mosquitto: Broker, tmp_path: Path
) -> None:
    site_id = f"ev{uuid.uuid4().hex[:6]}"
    site = make_site(site_id, url=mosquitto.url, data_dir=tmp_path)
    client_id = f"gridflex-pipeline-{site_id}"
    for topic_filter in pipeline_filters(site_id):
        create_session(mosquitto.url, f"{client_id}-0", topic_filter)
    t0 = (time.time_ns() // 1_000_000) - 60_000
    token_hash = hashlib.sha256(b"ISO14443:04A2B3C4").hexdigest()
    inv = [
        status(site_id, "inv-1", "inverter", t0, reason="discovered"),
        status(site_id, "inv-1", "inverter", t0 + 1000, reason="poll ok"),  # no change
        status(site_id, "inv-1", "inverter", t0 + 2000, state="faulted", faults=["GroundFault"]),
        status(site_id, "inv-1", "inverter", t0 + 3000, reason="fault cleared"),
    ]
    evse = status(site_id, "evse-1", "evse", t0, transaction_id="tx-9")
    started = ChargingSession(
        site=site_id, asset="evse-1", ts_ms=t0 + 10, event="started", transaction_id="tx-9",
        start_ms=t0, meter_start_wh=1200.0, soc_start_pct=30.0, id_token_hash=token_hash,
    )  # fmt: skip
    ended = ChargingSession(
        site=site_id, asset="evse-1", ts_ms=t0 + 5010, event="ended", transaction_id="tx-9",
        start_ms=t0, end_ms=t0 + 5000, meter_start_wh=1200.0, meter_stop_wh=1215.5,
        soc_start_pct=30.0, soc_end_pct=31.0, id_token_hash=token_hash,
        stopped_reason="EVDisconnected",
    )  # fmt: skip
    wrong_asset = session_topic(site_id, "evse-2")
    messages = [
        *[(status_topic(site_id, "inverter", "inv-1"), s.to_json(), True) for s in inv],
        (status_topic(site_id, "evse", "evse-1"), evse.to_json(), True),
        (session_topic(site_id, "evse-1"), started.to_json(), False),
        (session_topic(site_id, "evse-1"), ended.to_json(), False),
        (session_topic(site_id, "evse-1"), ended.to_json(), False),  # redelivered
        (wrong_asset, ended.to_json(), False),
    ]

    stop_event = threading.Event()
    flow = build_flow(
        site, options=FlowOptions(client_id=client_id, flush_interval_s=0.2), stop_event=stop_event
    )
    runner = threading.Thread(target=run_main, args=(flow,), daemon=True)
    dead_topic = deadletter_topic("pipeline")
    with Subscriber(mosquitto.url, dead_topic) as dl:
        runner.start()
        publish(mosquitto.url, messages)
        assert wait_until(lambda: history_count(tmp_path, "status_changes") == 4)
        assert wait_until(lambda: history_count(tmp_path, "transactions where ended") == 1)
        assert dl.wait_for(lambda msgs: len(msgs) >= 1)
        (letter,) = dl.json_on(lambda t: t == dead_topic)
        assert letter["reason"].startswith("topic_mismatch")
        assert letter["topic"] == wrong_asset
    stop_event.set()
    runner.join(30)
    assert not runner.is_alive()

    con = connect(tmp_path)
    changes = con.execute(
        "select asset, ts_ms - ?, state, faults, transaction_id from status_changes "
        "order by asset, ts_ms",
        [t0],
    ).fetchall()
    assert changes == [
        ("evse-1", 0, "online", [], "tx-9"),
        ("inv-1", 0, "online", [], None),
        ("inv-1", 2000, "faulted", ["GroundFault"], None),
        ("inv-1", 3000, "online", [], None),
    ]
    (tx,) = con.execute(
        "select transaction_id, start_ms - ?, end_ms - ?, energy_import_wh, soc_start_pct, "
        "soc_end_pct, id_token_hash, stopped_reason from transactions",
        [t0, t0],
    ).fetchall()
    assert tx == ("tx-9", 0, 5000, 15.5, 30.0, 31.0, token_hash, "EVDisconnected")

    for stream, version in (("status_changes", "1"), ("transactions", "1")):
        files = sorted((tmp_path / stream).glob("date=*/part-*.parquet"))
        assert files
        for f in files:
            meta = pq.read_metadata(f).metadata
            assert meta[b"gridflex.stream"] == stream.encode()
            assert meta[b"gridflex.schema_version"] == version.encode()
            assert meta[b"gridflex.writer"].startswith(b"gridflex ")


def test_fault_events_reach_the_events_view_once_and_a_mismatch_is_dead_lettered(
    mosquitto: Broker, tmp_path: Path
) -> None:
    site_id = f"fe{uuid.uuid4().hex[:6]}"
    site = make_site(site_id, url=mosquitto.url, data_dir=tmp_path)
    client_id = f"gridflex-pipeline-{site_id}"
    for topic_filter in pipeline_filters(site_id):
        create_session(mosquitto.url, f"{client_id}-0", topic_filter)
    t0 = (time.time_ns() // 1_000_000) - 60_000
    ground = EventReport(
        site=site_id, component="control", asset="inv-1", ts_ms=t0, event="fault",
        fault_code="0x04", detail="GroundFault latched", event_id="ev-1",
    )  # fmt: skip
    limit = EventReport(
        site=site_id, component="collect-ocpp", ts_ms=t0, event="limit",
        fault_code="Max Capacity Reached", event_id="ev-2",
    )  # fmt: skip
    wrong_component = event_topic(site_id, "collect-modbus")
    messages = [
        (event_topic(site_id, "control"), ground.to_json(), False),
        (event_topic(site_id, "control"), ground.to_json(), False),  # redelivered
        (event_topic(site_id, "collect-ocpp"), limit.to_json(), False),
        (wrong_component, ground.to_json(), False),
    ]
    stop_event = threading.Event()
    flow = build_flow(
        site, options=FlowOptions(client_id=client_id, flush_interval_s=0.2), stop_event=stop_event
    )
    runner = threading.Thread(target=run_main, args=(flow,), daemon=True)
    dead_topic = deadletter_topic("pipeline")
    with Subscriber(mosquitto.url, dead_topic) as dl:
        runner.start()
        publish(mosquitto.url, messages)
        assert dl.wait_for(lambda msgs: len(msgs) >= 1)
        (letter,) = dl.json_on(lambda t: t == dead_topic)
        assert letter["reason"].startswith("topic_mismatch")
        assert letter["topic"] == wrong_component
        stored = tmp_path / "events"
        assert wait_until(lambda: len(pq.read_table(stored).column("event_id")) == 3
                          if any(stored.glob("date=*/part-*.parquet")) else False)  # fmt: skip
    stop_event.set()
    runner.join(30)
    assert not runner.is_alive()

    rows = (
        connect(tmp_path)
        .execute(
            "select component, asset, ts_ms - ?, event, fault_code, detail, event_id "
            "from events order by event_id",
            [t0],
        )
        .fetchall()
    )
    assert rows == [
        ("control", "inv-1", 0, "fault", "0x04", "GroundFault latched", "ev-1"),
        ("collect-ocpp", None, 0, "limit", "Max Capacity Reached", None, "ev-2"),
    ]
    for f in sorted(tmp_path.glob("events/date=*/part-*.parquet")):
        meta = pq.read_metadata(f).metadata
        assert meta[b"gridflex.stream"] == b"events"
        assert meta[b"gridflex.schema_version"] == b"2"
