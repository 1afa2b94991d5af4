"""Each long-running command serves /metrics: started for real, scraped, parsed, checked.

One test per process: the Modbus collector against simulated inverters, the CSMS with
simulated chargers, the pipeline fed over MQTT, and control writing to a simulated
inverter. All on loopback with the session's Mosquitto and free ports.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from gridflex.broker import Broker
from gridflex.contract import DispatchCommand, command_topic, telemetry_topic
from gridflex.net import free_port, free_port_block, wait_for_port
from pipelines.flow import telemetry_filter
from tests.metrics_helpers import Samples, gridflex, scrape_until, stop, value
from tests.pipelines.helpers import create_session, publish_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _inverters(base: int, count: int) -> str:
    return "".join(
        f'[[assets]]\nid = "inv{i}"\nkind = "inverter"\nhost = "127.0.0.1"\nport = {base + i}\n'
        "max_charge_w = 11000\nmax_discharge_w = 11000\nsoc_min_pct = 0\nsoc_max_pct = 100\n"
        for i in range(count)
    )


def _site_file(tmp_path: Path, site: str, broker: Broker, body: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        f'[site]\nid = "{site}"\n\n[mqtt]\nurl = "{broker.url}"\n\n{body}', encoding="utf-8"
    )
    return path


def _common(samples: Samples, component: str) -> None:
    """Build info and the process metrics every command serves."""
    assert value(samples, "gridflex_build_info", component=component) == 1
    assert (value(samples, "process_resident_memory_bytes") or 0) > 0


def test_collect_modbus_serves_polls_lateness_and_devices_online(
    mosquitto: Broker, tmp_path: Path
) -> None:
    base = free_port_block(2)
    sim = gridflex(
        tmp_path / "sim.log",
        "sim",
        "inverters",
        "--count",
        "2",
        "--base-port",
        str(base),
        "--seed",
        "1",
    )
    try:
        assert wait_for_port("127.0.0.1", base + 1, timeout_s=20)
        site = _site_file(tmp_path, f"m{uuid.uuid4().hex[:8]}", mosquitto, _inverters(base, 2))
        port = free_port()
        collector = gridflex(
            tmp_path / "collector.log",
            "collect",
            "modbus",
            "--site",
            str(site),
            "--metrics-listen",
            f"127.0.0.1:{port}",
        )
        try:
            samples = scrape_until(
                port,
                collector,
                lambda s: (
                    (value(s, "gridflex_modbus_polls_total") or 0) >= 10
                    and value(s, "gridflex_modbus_devices_online") == 2
                ),
            )
        finally:
            assert stop(collector) == 0
    finally:
        stop(sim)
    _common(samples, "collect_modbus")
    polls = value(samples, "gridflex_modbus_polls_total")
    assert value(samples, "gridflex_modbus_devices") == 2
    assert value(samples, "gridflex_modbus_missed_polls_total") is not None
    # every poll is in the lateness histogram, and its buckets are cumulative
    assert value(samples, "gridflex_modbus_poll_lateness_seconds_count") == polls
    assert value(samples, "gridflex_modbus_poll_lateness_seconds_bucket", le="+Inf") == polls
    small = value(samples, "gridflex_modbus_poll_lateness_seconds_bucket", le="0.001")
    large = value(samples, "gridflex_modbus_poll_lateness_seconds_bucket", le="1.0")
    assert small is not None and large is not None and small <= large <= (polls or 0)
    published = value(samples, "gridflex_modbus_readings_published_total") or 0
    assert published > 0
    assert (value(samples, "gridflex_mqtt_published_total", client="telemetry") or 0) > 0
    assert value(samples, "gridflex_mqtt_pending_messages", client="telemetry") is not None


def test_collect_ocpp_serves_stations_connected_and_messages(
    mosquitto: Broker, tmp_path: Path
) -> None:
    ocpp_port = free_port()
    assets = "".join(
        f'[[assets]]\nid = "evse{n}"\nkind = "evse"\nstation_id = "sim-cs-{n:04d}"\n'
        f'password = "station-password-0123"\nmax_charge_w = 22000\nmax_discharge_w = 11000\n'
        for n in (1, 2)
    )
    body = f"[ocpp]\nport = {ocpp_port}\nmeter_interval_s = 0.5\n\n{assets}"
    site = _site_file(tmp_path, f"o{uuid.uuid4().hex[:8]}", mosquitto, body)
    port = free_port()
    csms = gridflex(
        tmp_path / "csms.log",
        "collect",
        "ocpp",
        "--site",
        str(site),
        "--metrics-listen",
        f"127.0.0.1:{port}",
    )
    sim = None
    try:
        assert wait_for_port("127.0.0.1", ocpp_port, timeout_s=20)
        sim = gridflex(
            tmp_path / "chargers.log",
            "sim",
            "chargers",
            "--site",
            str(site),
            "--csms-url",
            f"ws://127.0.0.1:{ocpp_port}/ocpp",
            "--seed",
            "3",
        )
        samples = scrape_until(
            port,
            csms,
            lambda s: (
                value(s, "gridflex_ocpp_stations_connected") == 2
                and (value(s, "gridflex_ocpp_readings_published_total") or 0) >= 4
            ),
        )
    finally:
        if sim is not None:
            stop(sim)
        assert stop(csms) == 0
    _common(samples, "collect_ocpp")
    assert value(samples, "gridflex_ocpp_evses") == 2
    assert value(samples, "gridflex_ocpp_evses_online") == 2
    assert (value(samples, "gridflex_ocpp_connections_total") or 0) >= 2
    # BootNotification, StatusNotification, MeterValues...: more frames than readings
    frames = value(samples, "gridflex_ocpp_messages_received_total") or 0
    assert frames > (value(samples, "gridflex_ocpp_readings_published_total") or 0)
    assert value(samples, "gridflex_ocpp_callerrors_sent_total") == 0
    assert (value(samples, "gridflex_mqtt_published_total", client="csms") or 0) > 0


def test_pipeline_serves_messages_in_out_and_dead_letters_by_reason(
    mosquitto: Broker, tmp_path: Path
) -> None:
    site_id = f"p{uuid.uuid4().hex[:8]}"
    site = _site_file(tmp_path, site_id, mosquitto, f'[history]\ndir = "{tmp_path / "h"}"\n')
    # the pipeline's persistent session exists before it runs: nothing published is lost
    create_session(mosquitto.url, f"gridflex-pipeline-{site_id}-0", telemetry_filter(site_id))
    port = free_port()
    pipeline = gridflex(
        tmp_path / "pipeline.log",
        "pipeline",
        "--site",
        str(site),
        "--metrics-listen",
        f"127.0.0.1:{port}",
    )
    try:
        scrape_until(
            port,
            pipeline,
            lambda s: value(s, "gridflex_pipeline_receive_queue_messages") is not None,
        )
        now = time.time_ns() // 1_000_000
        good = [
            (
                telemetry_topic(site_id, "inverter", "inv1"),
                json.dumps(
                    {
                        "schema": "telemetry/1",
                        "site": site_id,
                        "asset": "inv1",
                        "kind": "inverter",
                        "ts_ms": now + i * 200,
                        "seq": i,
                        "boot": "b1",
                        "power_w": -1500.0,
                        "freq_hz": 50.0,
                    }
                ).encode(),
            )
            for i in range(5)
        ]
        bad = [(telemetry_topic(site_id, "inverter", "inv2"), b"not json")] * 2
        publish_all(mosquitto.url, good + bad)
        samples = scrape_until(
            port,
            pipeline,
            lambda s: (
                (value(s, "gridflex_pipeline_messages_received_total") or 0) >= 7
                and value(s, "gridflex_dead_letters_total", reason="not_json") == 2
            ),
        )
    finally:
        assert stop(pipeline) == 0
    _common(samples, "pipeline")
    assert (
        value(samples, "gridflex_dead_letters_total", component="pipeline", reason="invalid") == 0
    )
    assert value(samples, "gridflex_pipeline_read_pauses_total", partition="0") == 0
    # out: the dead letters at least (and the frequency windows, summaries)
    assert (value(samples, "gridflex_mqtt_published_total", client="out-w0") or 0) >= 2


def test_control_serves_commands_acks_by_result_and_ack_latency(
    mosquitto: Broker, tmp_path: Path
) -> None:
    base = free_port_block(1)
    sim = gridflex(
        tmp_path / "sim.log",
        "sim",
        "inverters",
        "--count",
        "1",
        "--base-port",
        str(base),
        "--seed",
        "1",
    )
    try:
        assert wait_for_port("127.0.0.1", base, timeout_s=20)
        site_id = f"c{uuid.uuid4().hex[:8]}"
        site = _site_file(tmp_path, site_id, mosquitto, _inverters(base, 1))
        port = free_port()
        control = gridflex(
            tmp_path / "control.log",
            "control",
            "--site",
            str(site),
            "--ledger",
            str(tmp_path / "ledger.sqlite3"),
            "--metrics-listen",
            f"127.0.0.1:{port}",
        )
        try:
            scrape_until(port, control, lambda s: value(s, "gridflex_control_assets") == 1)
            sent = 0

            def acked(s: Samples) -> bool:
                # resend until the service has subscribed (its session starts with it)
                nonlocal sent
                if (value(s, "gridflex_control_acks_total", result="applied") or 0) >= 1:
                    return True
                now = time.time_ns() // 1_000_000
                command = DispatchCommand(
                    site=site_id,
                    asset="inv0",
                    ts_ms=now - 100,
                    seq=sent,
                    command_id=f"c{sent}",
                    issued_ms=now,
                    setpoint_w=-1000.0,
                    valid_until_ms=now + 30_000,
                    mode="droop",
                    reason="test",
                )
                topic = command_topic(site_id, "inv0")
                publish_all(mosquitto.url, [(topic, command.to_json()), (topic, b"{")])
                sent += 1
                return False

            samples = scrape_until(port, control, acked)
        finally:
            assert stop(control) == 0
    finally:
        stop(sim)
    _common(samples, "control")
    received = value(samples, "gridflex_control_commands_received_total") or 0
    malformed = value(
        samples, "gridflex_dead_letters_total", component="control", reason="malformed"
    )
    assert malformed is not None and malformed >= 1
    assert received >= 2  # a command and a malformed one per round
    acks = sum(
        s.value for s in samples if s.name == "gridflex_control_acks_total"
    )  # more commands may still be applied while the scrape runs: bounds, not equality
    latencies = value(samples, "gridflex_control_ack_latency_seconds_count") or 0
    assert 1 <= latencies <= acks
    assert (value(samples, "gridflex_control_ack_latency_seconds_sum") or 0) > 0
    assert value(samples, "gridflex_control_mailbox_jobs") is not None
    assert (value(samples, "gridflex_mqtt_published_total", client="control") or 0) >= 1
