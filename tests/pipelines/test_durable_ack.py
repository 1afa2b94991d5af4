"""No loss across a killed pipeline: SIGKILL at random moments under load, then restart.

``gridflex pipeline`` runs as an operator starts it (its own process group, with its
receiver child process) on a real Mosquitto; a publisher sends telemetry with known
sequence numbers at QoS 1 the whole time, and the pipeline is killed with SIGKILL
several times while messages are in flight. The history (DuckDB views) must then hold
every message the broker accepted exactly once: no gap, no duplicate.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from gridflex import history
from gridflex.broker import Broker
from gridflex.contract import telemetry_topic
from gridflex.mqtt import MqttClient
from pipelines.flow import pipeline_filters
from tests.pipelines.helpers import create_session, telemetry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ASSETS = [f"inv-{i}" for i in range(5)]
#: Readings per asset; 5 assets every 20 ms is ~250 messages a second.
PER_ASSET = 2_000
PERIOD_S = 0.02


def write_site(path: Path, site_id: str, url: str, history_dir: Path) -> Path:
    assets = "".join(
        f'[[assets]]\nid = "{a}"\nkind = "inverter"\nhost = "127.0.0.1"\nunit_id = {i + 1}\n'
        "max_charge_w = 10000\nmax_discharge_w = 10000\ncapacity_wh = 60000\n\n"
        for i, a in enumerate(ASSETS)
    )
    path.write_text(
        f'[site]\nid = "{site_id}"\n\n[mqtt]\nurl = "{url}"\n\n'
        f'[history]\ndir = "{history_dir}"\n\n'
        "[pipeline]\nsnapshot_interval_s = 0.5\n\n" + assets
    )
    return path


def start_pipeline(site_file: Path, log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "gridflex.cli", "pipeline", "--site", str(site_file)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )


class Publisher(threading.Thread):
    """Readings of every asset every ``PERIOD_S`` at QoS 1, seq 0 .. PER_ASSET - 1."""

    def __init__(self, url: str, site_id: str) -> None:
        super().__init__(daemon=True)
        self.site_id = site_id
        self.client = MqttClient(url, f"test-pub-{uuid.uuid4().hex[:8]}", clean_session=True)
        self.sent = 0

    def run(self) -> None:
        self.client.start()
        assert self.client.wait_connected(10)
        start_ms = time.time_ns() // 1_000_000
        for seq in range(PER_ASSET):
            for asset in ASSETS:
                payload = telemetry(asset, start_ms + seq * 20, seq, site=self.site_id)
                topic = telemetry_topic(self.site_id, "inverter", asset)
                assert self.client.publish(topic, json.dumps(payload).encode())
                self.sent += 1
            time.sleep(PERIOD_S)


def telemetry_keys(history_dir: Path) -> list[tuple[str, int]]:
    con = history.connect(history_dir)
    try:
        rows = con.execute("SELECT asset, seq FROM telemetry ORDER BY asset, seq").fetchall()
    finally:
        con.close()
    return [(str(a), int(s)) for a, s in rows]


def test_sigkill_at_random_moments_loses_and_doubles_no_reading(
    mosquitto: Broker, tmp_path: Path
) -> None:
    site_id = f"wal{uuid.uuid4().hex[:6]}"
    history_dir = tmp_path / "hist"
    site_file = write_site(tmp_path / "site.toml", site_id, mosquitto.url, history_dir)
    for topic_filter in pipeline_filters(site_id):
        create_session(mosquitto.url, f"gridflex-pipeline-{site_id}-0", topic_filter)
    log_file = tmp_path / "pipeline.log"
    rng = random.Random(20261130)

    publisher = Publisher(mosquitto.url, site_id)
    publisher.start()
    kills = 0
    while publisher.is_alive() and kills < 4:
        proc = start_pipeline(site_file, log_file)
        time.sleep(rng.uniform(1.5, 4.0))  # started, receiving, not yet flushed to Parquet
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    publisher.join(120)
    assert not publisher.is_alive()
    assert publisher.client.flush(30), "the broker did not accept every reading"
    publisher.client.stop()
    assert kills >= 3, "the publisher finished before the pipeline was killed three times"

    expected = [(a, s) for a in ASSETS for s in range(PER_ASSET)]
    final = start_pipeline(site_file, log_file)
    try:
        deadline = time.monotonic() + 120
        got: list[tuple[str, int]] = []
        while time.monotonic() < deadline and len(got) < len(expected):
            time.sleep(2.0)  # the history writes every 5 s by default
            got = telemetry_keys(history_dir)
    finally:
        final.send_signal(signal.SIGTERM)
        assert final.wait(60) == 0, log_file.read_text()[-3000:]
    got = telemetry_keys(history_dir)
    missing = sorted(set(expected) - set(got))
    assert not missing, f"{len(missing)} readings lost, e.g. {missing[:5]}"
    assert got == sorted(expected)  # and none twice
