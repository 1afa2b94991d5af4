"""Dispatch over real Mosquitto: commands and retained summary; SIGKILL and restart.

The pipeline runs as ``gridflex pipeline --site FILE`` in its own process group, exactly as
an operator starts it; readings are published at QoS 1 and commands read by a subscriber.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from numpy.testing import assert_allclose

from gridflex.broker import Broker
from gridflex.config import load_site
from gridflex.contract import command_topic, parse_payload, summary_topic, telemetry_topic
from pipelines.flow import FlowOptions, build_flow, telemetry_filter
from pipelines.validate import RawMessage
from tests.mqtt_helpers import Subscriber
from tests.pipelines.helpers import create_session, publish_all, telemetry

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ["inv-1", "inv-2"]


def write_site(path: Path, site_id: str, url: str) -> Path:
    assets = "".join(
        f'[[assets]]\nid = "{a}"\nkind = "inverter"\nhost = "127.0.0.1"\nunit_id = {i + 1}\n'
        "max_charge_w = 10000\nmax_discharge_w = 10000\ncapacity_wh = 60000\n\n"
        for i, a in enumerate(ASSETS)
    )
    path.write_text(
        f'[site]\nid = "{site_id}"\n\n[mqtt]\nurl = "{url}"\n\n[history]\ndir = "hist"\n\n'
        "[pipeline]\nsnapshot_interval_s = 0.5\n\n"
        '[dispatch]\nmode = "droop"\nmin_step_w = 50\nrefresh_s = 2\n\n' + assets
    )
    return path


def readings(site_id: str, start_ms: int, first_seq: int, count: int) -> list[dict[str, Any]]:
    """Readings every 200 ms; the frequency walks down and up so commands keep changing."""
    out = []
    for i in range(first_seq, first_seq + count):
        freq = 49.95 - 0.02 * (i % 10)  # 49.95 .. 49.77 Hz: inside and beyond the dead band
        for a in ASSETS:
            out.append(
                telemetry(
                    a, start_ms + i * 200, i, site=site_id, freq_hz=freq, soc_pct=50.0, power_w=0.0
                )
            )
    return out


def as_messages(payloads: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    return [
        (telemetry_topic(p["site"], p["kind"], p["asset"]), json.dumps(p).encode())
        for p in payloads
    ]


@contextmanager
def pipeline(site_file: Path, workers: int = 1) -> Iterator[subprocess.Popen[bytes]]:
    argv = ["pipeline", "--site", str(site_file), "--workers", str(workers)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridflex.cli", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def commands_of(sub: Subscriber) -> list[dict[str, Any]]:
    return sub.json_on(lambda t: t.endswith("/command"))


@pytest.mark.parametrize("workers", [1, 2])
def test_commands_and_retained_summary_over_mqtt(
    mosquitto: Broker, tmp_path: Path, workers: int
) -> None:
    site_id = f"dm{uuid.uuid4().hex[:6]}"
    site_file = write_site(tmp_path / "site.toml", site_id, mosquitto.url)
    create_session(mosquitto.url, f"gridflex-pipeline-{site_id}-0", telemetry_filter(site_id))
    start_ms = (time.time_ns() // 1_000_000) - 5_000
    payloads = [
        telemetry(a, start_ms + i * 200, i, site=site_id, freq_hz=f, soc_pct=50.0, power_w=0.0)
        for i, f in enumerate([50.0, 50.0, 49.8, 49.8, 50.2])
        for a in ASSETS
    ]
    with (
        Subscriber(mosquitto.url, f"gridflex/v1/{site_id}/dispatch/+/command") as sub,
        pipeline(site_file, workers) as proc,
    ):
        publish_all(mosquitto.url, as_messages(payloads))
        assert sub.wait_for(lambda m: len(m) >= 6, timeout_s=30), proc.stderr
        for asset in ASSETS:
            mine = [c for c in commands_of(sub) if c["asset"] == asset]
            assert [round(c["setpoint_w"]) for c in mine] == [0, -656, 656]
            assert all(
                t == command_topic(site_id, asset)
                for t, p in sub.messages
                if json.loads(p)["asset"] == asset
            )
        # a late subscriber gets the retained summary
        with Subscriber(mosquitto.url, summary_topic(site_id)) as late:
            assert late.wait_for(lambda m: len(m) >= 1, timeout_s=10)
            summary = parse_payload(late.messages[0][1])
            assert summary.model_dump()["mode"] == "droop"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def reference_commands(site_file: Path, payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """The commands the same readings give in one uninterrupted in-process run."""
    out: list[tuple[str, bytes]] = []
    site = load_site(site_file)
    messages = [RawMessage(t, p, json.loads(p)["ts_ms"] + 3) for t, p in as_messages(payloads)]
    flow = build_flow(
        site,
        site_file.parent / "reference",
        options=FlowOptions(),
        source=TestingSource(messages),
        mqtt_sink=TestingSink(out),
    )
    run_main(flow)
    return {c["command_id"]: c for c in (json.loads(p) for t, p in out if t.endswith("/command"))}


@pytest.mark.slow
def test_sigkill_and_restart_resumes_state_and_reissues_no_id_for_other_inputs(
    mosquitto: Broker, tmp_path: Path
) -> None:
    site_id = f"dk{uuid.uuid4().hex[:6]}"
    site_file = write_site(tmp_path / "site.toml", site_id, mosquitto.url)
    create_session(mosquitto.url, f"gridflex-pipeline-{site_id}-0", telemetry_filter(site_id))
    start_ms = (time.time_ns() // 1_000_000) - 30_000
    phase_a = readings(site_id, start_ms, 0, 40)
    phase_b = readings(site_id, start_ms, 40, 40)
    expected = reference_commands(site_file, phase_a + phase_b)
    from_a = {k for k, c in expected.items() if c["seq"] < 40}

    with Subscriber(mosquitto.url, f"gridflex/v1/{site_id}/dispatch/+/command") as sub:
        with pipeline(site_file) as first:
            publish_all(mosquitto.url, as_messages(phase_a))
            assert sub.wait_for(
                lambda m: {json.loads(p)["command_id"] for _, p in m} >= from_a, timeout_s=30
            ), "phase A commands did not all arrive"
            time.sleep(2.0)  # several snapshots (every 0.5 s) after the last decision
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        # The broker keeps the persistent session's messages while the pipeline is down.
        publish_all(mosquitto.url, as_messages(phase_b))
        with pipeline(site_file) as second:
            assert sub.wait_for(lambda m: len(m) >= len(expected), timeout_s=60), (
                f"{len(sub.messages)} of {len(expected)} commands"
            )
            time.sleep(1.0)  # anything extra would show up now
            second.send_signal(signal.SIGTERM)
            second.wait(60)
        got = commands_of(sub)

    by_id: dict[str, list[dict[str, Any]]] = {}
    for c in got:
        by_id.setdefault(c["command_id"], []).append(c)
    # No id was issued twice for different inputs (reading or decision).
    for cid, copies in by_id.items():
        assert len({(c["asset"], c["seq"], c["setpoint_w"], c["mode"]) for c in copies}) == 1, cid
    # None lost, none invented: exactly the uninterrupted run's commands, with the same ids,
    # so the restarted pipeline resumed the state (last setpoint, keep-alive clock).
    assert set(by_id) == set(expected)
    for cid, copies in by_id.items():
        assert_allclose(copies[0]["setpoint_w"], expected[cid]["setpoint_w"])
