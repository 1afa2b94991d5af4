"""``gridflex pipeline`` as a two-process Bytewax cluster over an MQTT shared subscription.

The same telemetry (with redeliveries) goes to a one-process pipeline and to a cluster of
two processes (``--addresses``/``--process-id``); both histories must hold the same rows.
The broker queues the input in persistent sessions opened before it is published: one
for the single process, one per cluster process in a shared subscription group, so the
broker splits the input between the two processes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from gridflex import history
from gridflex.broker import Broker
from gridflex.contract import telemetry_topic
from gridflex.net import free_port
from pipelines.cli import Cluster, parse_cluster
from pipelines.flow import FlowOptions, mqtt_source, pipeline_filters
from tests.pipelines.helpers import create_session, publish_all, telemetry

ROOT = Path(__file__).resolve().parents[2]
ASSETS = [f"inv-{i}" for i in range(6)]
PER_ASSET = 40


def test_cluster_options_must_agree() -> None:
    assert parse_cluster(None, None, None) == Cluster()
    assert parse_cluster(2, 1, "127.0.0.1:7001, 127.0.0.1:7002") == Cluster(
        1, ("127.0.0.1:7001", "127.0.0.1:7002")
    )
    for processes, process_id, addresses in [
        (2, 0, None),  # a cluster without addresses
        (3, 0, "a:1,b:2"),  # count and addresses disagree
        (None, 2, "a:1,b:2"),  # no such process
        (None, None, "a:1,b:2"),  # which one is this?
        (None, 0, "a:1,b"),  # not host:port
    ]:
        with pytest.raises(ValueError):
            parse_cluster(processes, process_id, addresses)


def test_each_process_lists_only_its_own_subscriber_in_a_shared_group(tmp_path: Path) -> None:
    """Bytewax builds a partition where it was listed: one subscriber per process."""
    from gridflex.config import parse_site

    site = parse_site({"site": {"id": "s1"}, "mqtt": {"url": "mqtt://127.0.0.1:1883"}})
    parts = [
        mqtt_source(site, FlowOptions(process_id=i, processes=2, client_id="p")).list_parts()
        for i in (0, 1)
    ]
    assert parts == [["mqtt-0"], ["mqtt-1"]]
    alone = mqtt_source(site, FlowOptions(client_id="p"))
    assert alone.list_parts() == ["mqtt-0"]


def _site_file(path: Path, site_id: str, url: str) -> Path:
    assets = "".join(
        f'[[assets]]\nid = "{a}"\nkind = "inverter"\nhost = "127.0.0.1"\nunit_id = {i + 1}\n'
        "max_charge_w = 10000\nmax_discharge_w = 10000\ncapacity_wh = 60000\n\n"
        for i, a in enumerate(ASSETS)
    )
    path.write_text(
        f'[site]\nid = "{site_id}"\n\n[mqtt]\nurl = "{url}"\n\n'
        "[pipeline]\nsnapshot_interval_s = 0.5\n\n" + assets,
        encoding="utf-8",
    )
    return path


def _input(site_id: str) -> list[tuple[str, bytes]]:
    """Every asset's readings, and a redelivery of every fifth one (same boot and seq)."""
    start_ms = time.time_ns() // 1_000_000 - 60_000
    messages = []
    for seq in range(PER_ASSET):
        for n, asset in enumerate(ASSETS):
            payload = telemetry(
                asset,
                start_ms + seq * 200,
                seq,
                site=site_id,
                power_w=-100.0 * n - seq,
                energy_import_wh=1000.0 + 10 * seq,
            )
            message = (telemetry_topic(site_id, "inverter", asset), json.dumps(payload).encode())
            messages.append(message)
            if seq % 5 == 0:
                messages.append(message)
    return messages


def _start(site_file: Path, data_dir: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "gridflex.cli", "pipeline", "--site", str(site_file),
             "--data-dir", str(data_dir), *extra],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )  # fmt: skip


def _rows(data_dir: Path) -> list[tuple[Any, ...]]:
    if not (data_dir / "telemetry").exists():
        return []
    con = history.connect(data_dir)
    try:
        return con.execute("SELECT * FROM telemetry ORDER BY asset, boot, seq").fetchall()
    finally:
        con.close()


def _run_until_complete(procs: list[subprocess.Popen[bytes]], data_dir: Path, log: Path) -> None:
    expected = len(ASSETS) * PER_ASSET
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(_rows(data_dir)) < expected:
            time.sleep(1.0)  # the history writes every 5 s by default
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(60) for proc in procs]
    assert codes == [0] * len(procs), log.read_text()[-3000:]


@pytest.mark.integration
@pytest.mark.slow
def test_a_two_process_cluster_writes_the_same_history_as_one_process(
    mosquitto: Broker, tmp_path: Path
) -> None:
    site_id = f"cl{uuid.uuid4().hex[:6]}"
    site_file = _site_file(tmp_path / "site.toml", site_id, mosquitto.url)
    one, two = f"one-{site_id}", f"two-{site_id}"
    for topic_filter in pipeline_filters(site_id):
        create_session(mosquitto.url, f"{one}-0", topic_filter)
        for i in (0, 1):
            create_session(mosquitto.url, f"{two}-{i}", f"$share/{two}/{topic_filter}")
    publish_all(mosquitto.url, _input(site_id))

    log = tmp_path / "pipeline.log"
    single_dir = tmp_path / "single"
    _run_until_complete([_start(site_file, single_dir, log, "--client-id", one)], single_dir, log)

    cluster_dir = tmp_path / "cluster"
    addresses = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    procs = [
        _start(site_file, cluster_dir, log, "--client-id", two, "--processes", "2",
               "--process-id", str(i), "--addresses", addresses)
        for i in (0, 1)
    ]  # fmt: skip
    _run_until_complete(procs, cluster_dir, log)

    single, cluster = _rows(single_dir), _rows(cluster_dir)
    assert len(single) == len(ASSETS) * PER_ASSET  # redeliveries de-duplicated
    assert cluster == single
    # the broker split the input: each process's own subscriber received a part of it
    received = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"MQTT source (\S+) finished after (\d+) messages", log.read_text())
    }
    assert sorted(k for k in received if k.startswith(two)) == [f"{two}-0", f"{two}-1"]
    assert received[f"{two}-0"] > 0
    assert received[f"{two}-1"] > 0
    assert received[f"{two}-0"] + received[f"{two}-1"] == received[f"{one}-0"]
    logs = sorted(p.name for p in (cluster_dir / "wal").iterdir() if p.is_dir())
    assert logs == [f"{two}-0", f"{two}-1"]  # one write-ahead log per process
