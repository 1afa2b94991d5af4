"""Builders shared by the pipeline tests: a site, telemetry payloads and raw messages."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from gridflex.config import SiteConfig, parse_site
from gridflex.contract import ack_topic, telemetry_topic
from gridflex.history import connect
from gridflex.mqtt import MqttClient, parse_url
from pipelines.validate import RawMessage

#: 2023-11-14T22:13:20Z, on a whole second (and a whole window of 1 s).
T0_MS = 1_700_000_000_000


def make_site(
    site_id: str = "s1",
    *,
    url: str = "mqtt://127.0.0.1:1883",
    data_dir: Path | None = None,
    nominal_hz: int = 50,
    window_ms: int = 1000,
    lateness_ms: int = 500,
    inverters: tuple[str, ...] = (),
) -> SiteConfig:
    """A site built in code through the real config loader.

    ``inverters``: ids of inverter assets in the site file (acks are accepted for the
    site's assets only); their address is never used by the dataflow.
    """
    doc: dict[str, Any] = {
        "site": {"id": site_id, "nominal_frequency_hz": nominal_hz},
        "mqtt": {"url": url},
        "pipeline": {"window_ms": window_ms, "allowed_lateness_ms": lateness_ms},
    }
    if inverters:
        doc["assets"] = [
            {
                "id": a,
                "kind": "inverter",
                "host": "127.0.0.1",
                "unit_id": i + 1,
                "max_charge_w": 5_000,
                "max_discharge_w": 5_000,
                "capacity_wh": 10_000,
            }
            for i, a in enumerate(inverters)
        ]
    if data_dir is not None:
        doc["history"] = {"dir": str(data_dir)}
    return parse_site(doc)


def telemetry(
    asset: str,
    ts_ms: int,
    seq: int,
    *,
    site: str = "s1",
    kind: str = "inverter",
    boot: str = "boot-1",
    power_w: float = -1500.0,
    freq_hz: float | None = 50.0,
    **extra: Any,
) -> dict[str, Any]:
    """A valid telemetry/1 payload as a dict."""
    payload: dict[str, Any] = {
        "schema": "telemetry/1",
        "site": site,
        "asset": asset,
        "kind": kind,
        "ts_ms": ts_ms,
        "seq": seq,
        "boot": boot,
        "power_w": power_w,
    }
    if freq_hz is not None:
        payload["freq_hz"] = freq_hz
    payload.update(extra)
    return payload


def raw(
    payload: dict[str, Any] | bytes, *, topic: str | None = None, received_ms: int = 0
) -> RawMessage:
    """A RawMessage on the payload's own telemetry topic (unless ``topic`` is given)."""
    if isinstance(payload, bytes):
        body = payload
        assert topic is not None
    else:
        body = json.dumps(payload).encode()
        topic = topic or telemetry_topic(payload["site"], payload["kind"], payload["asset"])
        received_ms = received_ms or payload["ts_ms"] + 3
    return RawMessage(topic, body, received_ms)


def ack(
    asset: str,
    command_id: str,
    *,
    site: str = "s1",
    result: str = "applied",
    ts_ms: int = T0_MS + 60,
    seq: int = 1,
    setpoint_w: float = -656.0,
    **extra: Any,
) -> dict[str, Any]:
    """A valid ack/1 payload as a dict: a command of reading ``seq`` (at ``T0_MS``) applied."""
    payload: dict[str, Any] = {
        "schema": "ack/1",
        "site": site,
        "asset": asset,
        "ts_ms": ts_ms,
        "seq": seq,
        "command_id": command_id,
        "result": result,
        "requested_w": setpoint_w,
        "applied_w": setpoint_w,
        "readback_w": setpoint_w,
        "issued_ms": T0_MS + 10,
        "latency_from_issued_ms": ts_ms - T0_MS - 10,
        "latency_from_telemetry_ms": ts_ms - T0_MS,
    }
    payload.update(extra)
    return {k: v for k, v in payload.items() if v is not None}


def raw_ack(
    payload: dict[str, Any] | bytes, *, topic: str | None = None, received_ms: int = 0
) -> RawMessage:
    """A RawMessage on the ack's own topic (unless ``topic`` is given)."""
    if isinstance(payload, bytes):
        assert topic is not None
        return RawMessage(topic, payload, received_ms or T0_MS)
    topic = topic or ack_topic(payload["site"], payload["asset"])
    return RawMessage(topic, json.dumps(payload).encode(), received_ms or payload["ts_ms"] + 2)


def step_series(
    assets: list[str],
    *,
    start_ms: int,
    seconds: int,
    step_at_ms: int,
    before_hz: float = 50.0,
    after_hz: float = 49.8,
    period_ms: int = 200,
    site: str = "s1",
) -> list[dict[str, Any]]:
    """Readings of every asset every ``period_ms``; frequency steps at ``step_at_ms``."""
    out = []
    for i in range(seconds * 1000 // period_ms):
        ts = start_ms + i * period_ms
        for asset in assets:
            freq = before_hz if ts < step_at_ms else after_hz
            out.append(telemetry(asset, ts, i, site=site, freq_hz=freq))
    return out


def create_session(url: str, client_id: str, topic_filter: str) -> None:
    """Open a persistent MQTT session (QoS 1 subscription) and leave it.

    The broker then queues every matching message for ``client_id`` until that client
    comes back: a test can publish before the pipeline's subscriber has connected and
    still expect every message, which is what the pipeline's persistent session is for.
    """
    host, port, _ = parse_url(url)
    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.on_subscribe = lambda *_args: subscribed.set()
    client.on_connect = lambda c, *_args: c.subscribe(topic_filter, qos=1)
    client.connect(host, port)
    client.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError(f"could not subscribe {client_id} on {url}")
    finally:
        client.disconnect()
        client.loop_stop()


def publish_all(url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 and wait until the broker acknowledged every message."""
    client = MqttClient(url, f"test-pub-{uuid.uuid4().hex[:8]}", clean_session=True)
    client.start()
    if not client.wait_connected(10):
        raise RuntimeError(f"test publisher could not connect to {url}")
    for topic, payload in messages:
        assert client.publish(topic, payload)
    assert client.flush(10), "broker did not acknowledge every message"
    client.stop()


def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    """Poll ``condition`` every 50 ms; whether it held within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def history_count(data_dir: Path, view: str) -> int:
    """Rows of a history view."""
    con = connect(data_dir)
    try:
        return int(con.execute(f"select count(*) from {view}").fetchall()[0][0])
    finally:
        con.close()
