"""``gridflex central``: summaries in, one target per site out, shares by flexibility."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from gridflex.broker import Broker
from gridflex.central import CentralDispatcher, load_central, parse_central, run_central
from gridflex.config import ConfigError
from gridflex.contract import SiteSummary, SiteTarget, parse_payload, summary_topic
from gridflex.demo.sites import central_toml
from gridflex.mqtt import MqttClient
from gridflex.net import free_port
from tests.metrics_helpers import gridflex, scrape_until, stop, value
from tests.mqtt_helpers import Subscriber


def summary(site: str, flex_w: float, *, charge_w: float | None = None) -> SiteSummary:
    return SiteSummary(
        site=site,
        ts_ms=1,
        seq=1,
        mode="fcr",
        assets_total=3,
        assets_online=3,
        power_w=0.0,
        flex_charge_w=flex_w if charge_w is None else charge_w,
        flex_discharge_w=flex_w,
    )


def config(sites: list[str], capacity_w: float, url: str = "mqtt://127.0.0.1:1883") -> dict:
    return {
        "central": {"sites": sites, "interval_s": 0.2, "stale_after_s": 5.0},
        "mqtt": {"url": url},
        "service": {"fcr_capacity_w": capacity_w},
    }


def test_each_configured_site_gets_a_target_and_a_stale_one_gets_nothing() -> None:
    state = CentralDispatcher(parse_central(config(["a", "b", "c"], 9_000)))
    state.on_summary(summary("a", 10_000), received_ms=10_000)
    state.on_summary(summary("b", 20_000, charge_w=5_000), received_ms=10_000)
    state.on_summary(summary("c", 10_000), received_ms=1_000)  # 9 s old: stale
    assert not state.on_summary(summary("z", 10_000), received_ms=10_000)  # not listed
    targets = {t.site: t for t in state.allocate(now_ms=10_000)}
    assert {s: t.fcr_capacity_w for s, t in targets.items()} == {"a": 6_000, "b": 3_000, "c": 0}
    assert targets["c"].reason.startswith("stale summary")
    assert all(t.valid_until_ms == 40_000 and t.seq == 1 for t in targets.values())


def test_a_bad_central_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "central.toml"
    path.write_text("[central]\nsites = []\n[service]\nfcr_capacity_w = -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"central\.toml: .*sites"):
        load_central(path)


def test_central_publishes_targets_that_sum_to_the_fleet_capacity(mosquitto: Broker) -> None:
    tag = uuid.uuid4().hex[:6]
    sites = [f"c{tag}-{i}" for i in range(3)]
    cfg = parse_central(config(sites, 12_000, mosquitto.url))
    publisher = MqttClient(mosquitto.url, f"test-sites-{tag}", clean_session=True)
    publisher.start()
    assert publisher.wait_connected(10)
    for site, flex in zip(sites, (10_000, 20_000, 30_000), strict=True):
        publisher.publish(summary_topic(site), summary(site, flex).to_json(), retain=True)
    assert publisher.flush(10)
    stop = threading.Event()
    runner = threading.Thread(target=run_central, args=(cfg, stop), daemon=True)
    with Subscriber(mosquitto.url, "gridflex/v1/+/target") as sub:
        runner.start()

        def shares() -> dict[str, float]:
            latest: dict[str, float] = {}
            for _topic, payload in list(sub.messages):
                t = parse_payload(payload)
                assert isinstance(t, SiteTarget)
                if t.site in sites:
                    latest[t.site] = t.fcr_capacity_w
            return latest

        try:
            assert sub.wait_for(lambda _m: sum(shares().values()) > 0 and len(shares()) == 3)
            got = shares()
        finally:
            stop.set()
            runner.join(10)
            for site in sites:  # clear what this test left retained on the shared broker
                publisher.publish(summary_topic(site), b"", retain=True)
                publisher.publish(f"gridflex/v1/{site}/target", b"", retain=True)
            publisher.stop()
    assert got == {sites[0]: 2_000, sites[1]: 4_000, sites[2]: 6_000}


def _clear_retained_summaries(broker: Broker, publisher: MqttClient) -> None:
    """Remove the retained summaries earlier tests left, which the central would count."""
    seen = Subscriber(broker.url, "gridflex/v1/+/summary")
    time.sleep(0.5)  # the retained ones arrive right after the SUBACK
    for topic, payload in list(seen.messages):
        if payload:
            publisher.publish(topic, b"", retain=True)
    seen.close()
    assert publisher.flush(10)


def test_the_central_process_serves_its_metrics(mosquitto: Broker, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    sites = [f"m{tag}-{i}" for i in range(2)]
    path = tmp_path / "central.toml"
    path.write_text(
        central_toml(sites, mosquitto.url, 3_000).replace("interval_s = 1.0", "interval_s = 0.2"),
        encoding="utf-8",
    )
    publisher = MqttClient(mosquitto.url, f"test-msites-{tag}", clean_session=True)
    publisher.start()
    assert publisher.wait_connected(10)
    _clear_retained_summaries(mosquitto, publisher)  # other tests' on this broker
    for site in sites:
        publisher.publish(summary_topic(site), summary(site, 10_000).to_json(), retain=True)
    publisher.publish(summary_topic(f"x{tag}"), summary(f"x{tag}", 1).to_json(), retain=True)
    assert publisher.flush(10)
    port = free_port()
    proc = gridflex(
        tmp_path / "central.log",
        "central",
        "--config",
        str(path),
        "--metrics-listen",
        f"127.0.0.1:{port}",
    )
    try:
        samples = scrape_until(
            port,
            proc,
            lambda s: (
                (value(s, "gridflex_central_targets_published_total") or 0) >= 4
                and value(s, "gridflex_central_sites_fresh") == 2
            ),
        )
    finally:
        assert stop(proc) == 0
        for site in [*sites, f"x{tag}"]:
            publisher.publish(summary_topic(site), b"", retain=True)
            publisher.publish(f"gridflex/v1/{site}/target", b"", retain=True)
        publisher.stop()
    assert value(samples, "gridflex_central_summaries_total") == 2
    assert value(samples, "gridflex_central_summaries_refused_total") == 1  # not listed
    assert value(samples, "gridflex_central_sites_stale") == 0
    assert value(samples, "gridflex_central_allocated_watts") == 3_000
    assert value(samples, "gridflex_central_shortfall_watts") == 0
    assert (value(samples, "gridflex_central_round_seconds_count") or 0) >= 2
    assert value(samples, "gridflex_mqtt_received_total", client="central") == 3
    assert value(samples, "gridflex_build_info", component="central") == 1
