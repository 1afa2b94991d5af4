"""The whole pipeline on loopback: real Mosquitto, real Bytewax, Parquet, DuckDB."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from bytewax.testing import run_main
from numpy.testing import assert_allclose

from gridflex.broker import Broker
from gridflex.contract import ack_topic, deadletter_topic, grid_frequency_topic, telemetry_topic
from gridflex.history import connect
from pipelines.flow import FlowOptions, build_flow, pipeline_filters, telemetry_filter
from tests.mqtt_helpers import Subscriber
from tests.pipelines.helpers import (
    ack,
    create_session,
    history_count,
    make_site,
    publish_all,
    step_series,
    telemetry,
    wait_until,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def recent_second_ms(seconds_ago: int) -> int:
    """A whole second ``seconds_ago`` before now (readings in the past, never refused)."""
    return (time.time_ns() // 1_000_000 // 1000 - seconds_ago) * 1000


def as_messages(payloads: list[dict]) -> list[tuple[str, bytes]]:
    return [
        (telemetry_topic(p["site"], p["kind"], p["asset"]), json.dumps(p).encode())
        for p in payloads
    ]


def test_frequency_step_dead_letter_and_history_end_to_end(
    mosquitto: Broker, tmp_path: Path
) -> None:
    site_id = f"e2e{uuid.uuid4().hex[:6]}"
    site = make_site(site_id, url=mosquitto.url, data_dir=tmp_path)
    client_id = f"gridflex-pipeline-{site_id}"
    create_session(mosquitto.url, f"{client_id}-0", telemetry_filter(site_id))

    start_ms = recent_second_ms(6)
    readings = step_series(
        ["inv-1", "inv-2", "inv-3"],
        start_ms=start_ms,
        seconds=4,
        step_at_ms=start_ms + 2000,
        site=site_id,
    )
    before, after = as_messages(readings[:30]), as_messages(readings[30:])
    malformed = (telemetry_topic(site_id, "inverter", "inv-2"), b'{"schema": "telemetry/1", ')

    stop_event = threading.Event()
    flow = build_flow(
        site,
        options=FlowOptions(client_id=client_id, flush_interval_s=0.2),
        stop_event=stop_event,
    )
    runner = threading.Thread(target=run_main, args=(flow,), daemon=True)
    freq_topic = grid_frequency_topic(site_id)
    dead_topic = deadletter_topic("pipeline")
    with Subscriber(mosquitto.url, freq_topic) as freq, Subscriber(mosquitto.url, dead_topic) as dl:
        runner.start()
        # Valid telemetry, one malformed message, then valid telemetry again.
        publish_all(mosquitto.url, [*before, malformed, *after])

        # The last window closes on the wall-clock timeout while the pipeline keeps running.
        assert freq.wait_for(lambda msgs: len(msgs) >= 4)
        windows = sorted(
            freq.json_on(lambda t: t == freq_topic), key=lambda w: w["window_start_ms"]
        )
        assert [w["window_start_ms"] - start_ms for w in windows] == [0, 1000, 2000, 3000]
        assert_allclose([w["deviation_hz"] for w in windows], [0, 0, -0.2, -0.2], atol=1e-9)
        assert [w["samples"] for w in windows] == [15, 15, 15, 15]

        assert dl.wait_for(
            lambda msgs: any(json.loads(p).get("topic") == malformed[0] for _, p in msgs)
        )
        (letter,) = [
            d for d in dl.json_on(lambda t: t == dead_topic) if d.get("topic") == malformed[0]
        ]
        assert letter["reason"].startswith("not_json")
        assert letter["payload"] == malformed[1].decode()

        # Valid telemetry after the malformed message reaches the history while running.
        assert wait_until(lambda: history_count(tmp_path, "telemetry") == len(readings))

    stop_event.set()
    runner.join(30)
    assert not runner.is_alive()

    con = connect(tmp_path)
    rows = con.execute(
        "select window_start_ms - ?, deviation_hz, samples from grid_frequency order by 1",
        [start_ms],
    ).fetchall()
    assert [(r[0], r[2]) for r in rows] == [(0, 15), (1000, 15), (2000, 15), (3000, 15)]
    assert_allclose([r[1] for r in rows], [0, 0, -0.2, -0.2], atol=1e-9)
    assert history_count(tmp_path, "telemetry") == len(readings)


def test_acks_on_the_broker_reach_the_acks_view_and_bad_ones_the_dead_letters(
    mosquitto: Broker, tmp_path: Path
) -> None:
    site_id = f"ack{uuid.uuid4().hex[:6]}"
    site = make_site(site_id, url=mosquitto.url, data_dir=tmp_path, inverters=("inv-1",))
    client_id = f"gridflex-pipeline-{site_id}"
    for topic_filter in pipeline_filters(site_id):
        create_session(mosquitto.url, f"{client_id}-0", topic_filter)
    now_ms = recent_second_ms(1)
    applied = ack("inv-1", "c1", site=site_id, ts_ms=now_ms)
    duplicate = ack("inv-1", "c1", site=site_id, ts_ms=now_ms + 300, result="duplicate")
    reading = telemetry("inv-1", now_ms - 100, 1, site=site_id)
    messages = [
        (ack_topic(site_id, "inv-1"), json.dumps(applied).encode()),
        (ack_topic(site_id, "inv-1"), json.dumps(applied).encode()),  # redelivered
        (ack_topic(site_id, "inv-2"), json.dumps(duplicate).encode()),  # wrong asset
        (ack_topic(site_id, "inv-1"), json.dumps(duplicate).encode()),
        *as_messages([reading]),
    ]

    stop_event = threading.Event()
    flow = build_flow(
        site,
        options=FlowOptions(client_id=client_id, flush_interval_s=0.2),
        stop_event=stop_event,
    )
    runner = threading.Thread(target=run_main, args=(flow,), daemon=True)
    dead_topic = deadletter_topic("pipeline")
    with Subscriber(mosquitto.url, dead_topic) as dl:
        runner.start()
        publish_all(mosquitto.url, messages)
        assert wait_until(lambda: history_count(tmp_path, "acks") == 2)
        assert dl.wait_for(lambda msgs: len(msgs) >= 1)
        (letter,) = dl.json_on(lambda t: t == dead_topic)
        assert letter["reason"].startswith("topic_mismatch")
        assert letter["topic"] == ack_topic(site_id, "inv-2")
    stop_event.set()
    runner.join(30)
    assert not runner.is_alive()

    con = connect(tmp_path)
    rows = con.execute(
        "select asset, command_id, result, ts_ms - ? from acks order by ts_ms", [now_ms]
    ).fetchall()
    assert rows == [("inv-1", "c1", "applied", 0), ("inv-1", "c1", "duplicate", 300)]
    assert history_count(tmp_path, "telemetry") == 1


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_flushes_history_and_exits_0_on_signal(
    mosquitto: Broker, tmp_path: Path, signum: signal.Signals
) -> None:
    site_id = f"cli{uuid.uuid4().hex[:6]}"
    site_file = tmp_path / "site.toml"
    site_file.write_text(
        f'[site]\nid = "{site_id}"\n\n[mqtt]\nurl = "{mosquitto.url}"\n\n[history]\ndir = "hist"\n'
    )
    create_session(mosquitto.url, f"gridflex-pipeline-{site_id}-0", telemetry_filter(site_id))
    start_ms = recent_second_ms(4)
    readings = step_series(["inv-1", "inv-2"], start_ms=start_ms, seconds=2, step_at_ms=0)
    for r in readings:
        r["site"] = site_id
    freq_topic = grid_frequency_topic(site_id)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with Subscriber(mosquitto.url, freq_topic) as freq:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gridflex.cli", "pipeline", "--site", str(site_file)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, as under a terminal
        )
        try:
            publish_all(mosquitto.url, as_messages(readings))
            assert freq.wait_for(lambda msgs: len(msgs) >= 1), "the pipeline produced nothing"
            # With the default flush interval (5 s) the rows are most likely still in
            # memory here: the shutdown must flush them.
            if signum == signal.SIGINT:
                os.killpg(proc.pid, signum)  # Ctrl-C reaches the receiver child too
            else:
                proc.send_signal(signum)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert history_count(tmp_path / "hist", "telemetry") == len(readings)
    assert history_count(tmp_path / "hist", "grid_frequency") == 2
