"""The Fleet page's live feed: the newest reading and forecast per asset, from a real broker."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import app
from app import ui
from app.live import LiveFleet, LiveSource, source_from_site
from gridflex.app_cmd import streamlit_argv
from gridflex.broker import Broker
from gridflex.cli import build_parser
from gridflex.config import ConfigError
from gridflex.contract import Forecast, Telemetry, forecast_topic, telemetry_topic
from gridflex.mqtt import MqttClient
from tests.pipelines.helpers import wait_until

TIMEOUT_S = 60


def reading(asset: str, ts_ms: int, power_w: float, *, site: str = "s1") -> Telemetry:
    return Telemetry(
        site=site, asset=asset, kind="inverter", ts_ms=ts_ms, seq=ts_ms // 200, boot="b1",
        power_w=power_w, soc_pct=55.0, status="discharging" if power_w < 0 else "charging",
    )  # fmt: skip


def forecast(asset: str, ts_ms: int, *, site: str = "s1") -> Forecast:
    return Forecast(
        site=site, asset=asset, kind="inverter", ts_ms=ts_ms, seq=1, soc_pct=55.0,
        capacity_wh=60_000, power_w=0.0, setpoint_w=0.0, max_charge_w=10_000,
        max_discharge_w=7_000, discharge_energy_wh=20_000, must_charge_w=0.0, v2x=True,
        needs_source="battery",
    )  # fmt: skip


def write_site(path: Path, site_id: str, url: str) -> Path:
    path.write_text(f'[site]\nid = "{site_id}"\n\n[mqtt]\nurl = "{url}"\n', encoding="utf-8")
    return path


def test_the_feed_keeps_each_assets_newest_reading_and_its_forecast() -> None:
    feed = LiveFleet(LiveSource("mqtt://127.0.0.1:1", "s1"))  # never started: no socket
    feed.on_payload(reading("inv-b", 2_000, -3_000).to_json())
    feed.on_payload(reading("inv-a", 1_000, 1_000).to_json())
    feed.on_payload(reading("inv-a", 3_000, 2_500).to_json())
    feed.on_payload(reading("inv-a", 2_000, 9_999).to_json())  # late and older: kept out
    feed.on_payload(forecast("inv-b", 2_000).to_json())
    table = feed.frame()
    assert table["asset"].to_list() == ["inv-a", "inv-b"]
    assert table["power_w"].to_list() == [2_500.0, -3_000.0]
    assert table["ts_ms"].to_list() == [3_000, 2_000]
    assert table["max_discharge_w"].to_list() == [None, 7_000.0]
    assert table["v2x"].to_list() == [None, True]


def test_a_payload_outside_the_contract_is_counted_and_changes_nothing() -> None:
    feed = LiveFleet(LiveSource("mqtt://127.0.0.1:1", "s1"))
    feed.on_payload(reading("inv-a", 1_000, 1_000).to_json())
    for bad in (b"{", b'{"schema": "telemetry/1"}', b"[" * 10_000):
        feed.on_payload(bad)
    assert feed.rejected == 3
    assert feed.frame()["power_w"].to_list() == [1_000.0]


def test_gridflex_app_passes_its_site_file_to_the_app(tmp_path: Path) -> None:
    site = write_site(tmp_path / "site.toml", "s1", "mqtt://127.0.0.1:1883")
    args = build_parser(["app", "--site", str(site)]).parse_args(["app", "--site", str(site)])
    argv = streamlit_argv(args)
    assert argv[argv.index("--") :][-2:] == ["--site", str(site.resolve())]
    assert ui.site_file(argv[argv.index("--") + 1 :]) == site.resolve()


def test_a_bad_site_file_names_the_file_and_key(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[site]\nid = "s1"\n\n[mqtt]\nurl = "http://x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"site\.toml.*mqtt\.url"):
        source_from_site(site)


def test_gridflex_app_with_a_bad_site_file_says_why_and_starts_nothing(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[site]\nid = "s1"\n\n[mqtt]\nurl = "http://x"\n', encoding="utf-8")
    gridflex = Path(sys.executable).with_name("gridflex")
    result = subprocess.run(
        [str(gridflex), "app", "--site", str(site), "--port", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"config error in {site}: mqtt.url" in result.stderr


def publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    client = MqttClient(url, f"test-live-{uuid.uuid4().hex[:8]}", clean_session=True)
    client.start()
    try:
        assert client.wait_connected()
        for topic, payload in messages:
            client.publish(topic, payload, qos=1)
        assert client.flush(timeout_s=5.0)
    finally:
        client.stop()


@pytest.mark.integration
def test_the_feed_follows_its_sites_telemetry_over_mqtt_and_not_another_sites(
    mosquitto: Broker, tmp_path: Path
) -> None:
    site_id = f"live{uuid.uuid4().hex[:6]}"
    feed = LiveFleet(source_from_site(write_site(tmp_path / "site.toml", site_id, mosquitto.url)))
    feed.start()
    try:
        assert feed.wait_connected()
        time.sleep(0.3)  # the SUBSCRIBE goes out on the CONNACK
        now = int(time.time() * 1000)
        publish(
            mosquitto.url,
            [
                (telemetry_topic(site_id, "inverter", "inv-a"),
                 reading("inv-a", now, -4_200, site=site_id).to_json()),
                (telemetry_topic("other", "inverter", "inv-x"),
                 reading("inv-x", now, 1_000, site="other").to_json()),
                (forecast_topic(site_id, "inv-a"), forecast("inv-a", now, site=site_id).to_json()),
            ],
        )  # fmt: skip
        assert wait_until(lambda: len(feed.frame()) >= 1, timeout_s=10)
        time.sleep(0.3)  # the forecast and the other site's reading, had it come
        table = feed.frame()
    finally:
        feed.stop()
    assert table["asset"].to_list() == ["inv-a"]
    assert table["power_w"].to_list() == [-4_200.0]
    assert table["max_discharge_w"].to_list() == [7_000.0]


@pytest.mark.integration
def test_the_fleet_page_with_a_site_file_shows_the_brokers_newest_readings(
    mosquitto: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site_id = f"live{uuid.uuid4().hex[:6]}"
    site = write_site(tmp_path / "site.toml", site_id, mosquitto.url)
    empty_history = tmp_path / "no-history-here"  # the live view needs none
    monkeypatch.setenv(ui.DATA_DIR_ENV, str(empty_history))
    monkeypatch.setattr(sys, "argv", ["streamlit_app.py", "--site", str(site)])
    at = AppTest.from_file(str(app.MAIN_SCRIPT), default_timeout=TIMEOUT_S).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("no asset has reported yet" in i.value for i in at.info)
    feed = ui._started_feed(str(site.resolve()))  # the page's own feed (one per server)
    assert feed.wait_connected()
    time.sleep(0.3)
    now = int(time.time() * 1000)
    publish(
        mosquitto.url,
        [
            (telemetry_topic(site_id, "inverter", a), reading(a, now, p, site=site_id).to_json())
            for a, p in (("inv-a", 3_000.0), ("inv-b", -5_000.0))
        ],
    )
    assert wait_until(lambda: len(feed.frame()) >= 2, timeout_s=10)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["assets"] == "2"
    assert metrics["fleet power"] == "-2.0 kW"
    assert list(at.dataframe[0].value["power_w"]) == [3_000.0, -5_000.0]
    assert any(f"live from {mosquitto.url}" in c.value for c in at.caption)
    ui._started_feed.clear()  # disconnects nothing by itself: stop the feed
    feed.stop()
