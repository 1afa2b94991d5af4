"""gridflex.metrics: histograms, serving, the [metrics] table, names, docs and dashboard."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from collectors.modbus import metrics as modbus_metrics
from collectors.modbus.poller import CollectorStats
from collectors.modbus.schedule import LatenessStats
from collectors.ocpp import metrics as ocpp_metrics
from collectors.ocpp.csms import Csms, CsmsSettings
from control import metrics as control_metrics
from control.ledger import Ledger
from control.service import ControlService
from gridflex.config import ConfigError, SiteConfig, parse_site
from gridflex.metrics import Buckets, build_info, listen_address, serve_metrics
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.net import free_port
from pipelines import metrics as pipeline_metrics
from pipelines.flow import default_mqtt_sink, mqtt_source

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "gridflex-dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"


def _site(**metrics: str) -> SiteConfig:
    doc: dict[str, Any] = {
        "site": {"id": "s1"},
        "mqtt": {"url": "mqtt://127.0.0.1:1"},
        "assets": [
            {"id": "inv1", "kind": "inverter", "host": "127.0.0.1", "port": 1, "max_charge_w": 1},
            {
                "id": "ev1",
                "kind": "evse",
                "station_id": "cs1",
                "password": "station-password-0123",
                "max_charge_w": 1,
            },
        ],
    }
    if metrics:
        doc["metrics"] = metrics
    return parse_site(doc)


# --------------------------------------------------------------------------- histograms


def _buckets(family: Metric) -> dict[str, float]:
    return {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}


def _sample(family: Metric, suffix: str) -> float:
    return next(s.value for s in family.samples if s.name == family.name + suffix)


def test_buckets_are_cumulative_and_a_value_on_a_bound_counts_under_it() -> None:
    hist = Buckets((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        hist.observe(value)
    family = hist.family("x_seconds", "x")
    assert _buckets(family) == {"0.1": 2, "1.0": 3, "+Inf": 4}
    assert _sample(family, "_count") == 4
    assert _sample(family, "_sum") == pytest.approx(3.65)


def test_poll_lateness_is_summed_from_the_collectors_own_buckets() -> None:
    lateness = LatenessStats()
    for seconds in (0.0002, 0.0007, 0.002, 0.3, 2.0):  # the last beyond the 1 s buckets
        lateness.record(seconds)
    family = modbus_metrics.lateness_family(lateness)
    buckets = _buckets(family)
    assert buckets["0.0005"] == 1
    assert buckets["0.001"] == 2
    assert buckets["0.0025"] == 3
    assert buckets["0.25"] == 3
    assert buckets["0.5"] == buckets["1.0"] == 4
    assert buckets["+Inf"] == _sample(family, "_count") == 5
    assert _sample(family, "_sum") == pytest.approx(2.3029)


# --------------------------------------------------------------------------- serving


def test_nothing_is_served_without_an_address() -> None:
    assert serve_metrics(None, "control", list) is None


def test_served_metrics_carry_build_info_process_metrics_and_the_components() -> None:
    port = free_port()
    metrics = serve_metrics(
        f"127.0.0.1:{port}",
        "control",
        lambda: [modbus_metrics.counter("gridflex_test_things", "things", 3)],
    )
    assert metrics is not None
    try:
        with urllib.request.urlopen(metrics.url, timeout=5) as response:
            text = response.read().decode()
    finally:
        metrics.close()
    samples = {s.name: s for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples["gridflex_test_things_total"].value == 3
    assert samples["gridflex_build_info"].labels["component"] == "control"
    assert "process_cpu_seconds_total" in samples


def test_a_failing_collection_still_serves_build_info() -> None:
    def broken() -> list[Metric]:
        raise RuntimeError("boom")

    port = free_port()
    metrics = serve_metrics(f"127.0.0.1:{port}", "pipeline", broken)
    assert metrics is not None
    try:
        with urllib.request.urlopen(metrics.url, timeout=5) as response:
            assert b"gridflex_build_info" in response.read()
    finally:
        metrics.close()


def test_an_address_in_use_is_a_config_error_naming_it() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"control metrics on 127.0.0.1:{port}"):
            serve_metrics(f"127.0.0.1:{port}", "control", list)


def test_the_option_wins_over_the_site_file_and_is_validated() -> None:
    site = _site(control="127.0.0.1:9104")
    assert listen_address(site, "control", None) == "127.0.0.1:9104"
    assert listen_address(site, "control", "[::1]:9200") == "[::1]:9200"
    assert listen_address(site, "pipeline", None) is None
    with pytest.raises(ConfigError, match="--metrics-listen"):
        listen_address(site, "control", "9104")


def test_the_metrics_table_refuses_a_bad_address_and_a_shared_one() -> None:
    with pytest.raises(ConfigError, match=r"metrics\.pipeline: expected HOST:PORT"):
        _site(pipeline="localhost")
    with pytest.raises(ConfigError, match="collect_modbus and control both listen"):
        _site(collect_modbus="127.0.0.1:9101", control="127.0.0.1:9101")
    with pytest.raises(ConfigError, match="metrics"):
        _site(collect_modbus="127.0.0.1:9101", grafana="127.0.0.1:3000")


# --------------------------------------------------------------------------- names


def _all_families(tmp_path: Path) -> Iterator[Metric]:
    """Every family the four processes export, from their real objects (nothing started)."""
    site = _site()
    mqtt = AsyncMqttClient(site.mqtt.url, "test-metrics")
    yield build_info("test")
    yield from ProcessCollector(registry=CollectorRegistry()).collect()
    yield from modbus_metrics.families(CollectorStats(), mqtt)
    yield from ocpp_metrics.families(Csms(CsmsSettings.from_site(site), mqtt, boot_id="b"))
    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        yield from control_metrics.families(ControlService(site, ledger, mqtt))
    source, sink = mqtt_source(site), default_mqtt_sink(site)
    yield from pipeline_metrics.families(source, sink, Counter())


def _sample_names(family: Metric) -> set[str]:
    if family.type == "counter":
        return {f"{family.name}_total"}
    if family.type == "histogram":
        return {f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count")}
    return {family.name}


@pytest.fixture
def exported(tmp_path: Path) -> dict[str, Metric]:
    return {family.name: family for family in _all_families(tmp_path)}


def test_names_follow_the_prometheus_conventions(exported: dict[str, Metric]) -> None:
    ours = {name: f for name, f in exported.items() if not name.startswith("process_")}
    assert len(ours) > 40
    for name, family in ours.items():
        assert re.fullmatch(r"gridflex_[a-z0-9_]+", name), name
        assert not name.endswith("_total"), name  # the exposition adds it to counters
        assert not re.search(r"_(ms|millis|milliseconds|kw|kwh)(_|$)", name), name
        if family.type == "histogram":
            assert name.endswith("_seconds"), name


def test_every_exported_metric_is_documented(exported: dict[str, Metric]) -> None:
    docs = OPERATIONS.read_text(encoding="utf-8")
    section = docs[docs.index("## Metrics") :]
    for name, family in exported.items():
        if name.startswith("process_"):
            continue
        documented = f"{name}_total" if family.type == "counter" else name
        assert f"`{documented}`" in section, documented


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def test_every_dashboard_query_reads_metrics_the_code_exports(
    exported: dict[str, Metric],
) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    samples = set().union(*(_sample_names(f) for f in exported.values()))
    exprs = list(_exprs(dashboard))
    assert len(exprs) >= 10
    used: set[str] = set()
    for expr in exprs:
        names = set(re.findall(r"\b(?:gridflex|process)_[a-z0-9_]+\b", expr))
        assert names, expr
        assert names <= samples, f"{expr}: {sorted(names - samples)} not exported"
        used |= names
    # the dashboard covers what the issue asks to watch
    for needed in (
        "gridflex_modbus_polls_total",
        "gridflex_modbus_missed_polls_total",
        "gridflex_modbus_poll_lateness_seconds_bucket",
        "gridflex_control_ack_latency_seconds_bucket",
        "gridflex_mqtt_pending_messages",
        "gridflex_pipeline_receive_queue_messages",
        "gridflex_control_mailbox_jobs",
        "gridflex_modbus_devices_online",
        "gridflex_ocpp_stations_connected",
        "gridflex_dead_letters_total",
        "gridflex_control_acks_total",
    ):
        assert needed in used, needed
