"""The central broker of ``broker-config --central``: each site's bridge logs in, one topic each."""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridflex.broker import Broker, BrokerAuth, find_mosquitto, start_broker
from gridflex.broker_config import bridge_conf, read_credentials
from gridflex.cli import main as cli_main
from gridflex.contract import summary_topic, target_topic
from gridflex.mqtt import MqttClient
from gridflex.net import free_port, wait_for_port
from tests.mqtt_helpers import Subscriber, connack_code

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="needs mosquitto")

SITES = ["site-a", "site-b"]


@pytest.fixture
def central(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(url, credentials folder) of a central Mosquitto run from `broker-config --central`."""
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    config = tmp_path / "central.toml"
    config.write_text(
        f'[central]\nid = "hq"\nsites = {SITES!r}\n'.replace("'", '"')
        + f'[mqtt]\nurl = "{url}"\n[service]\nfcr_capacity_w = 1000\n',
        encoding="utf-8",
    )
    out = tmp_path / "central-broker"
    assert cli_main(["broker-config", "--central", str(config), "--out", str(out)]) == 0
    conf = out / "mosquitto.conf"
    if os.geteuid() == 0:  # as in gridflex.broker: stay the user that started it
        conf.write_text(conf.read_text(encoding="utf-8") + "user root\n", encoding="utf-8")
    binary = find_mosquitto()
    assert binary is not None
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        assert wait_for_port("127.0.0.1", port, timeout_s=10)
        yield url, out / "credentials"
    finally:
        proc.terminate()
        proc.wait(10)


def _login(url: str, creds_file: Path) -> MqttClient:
    creds = read_credentials(creds_file)
    client = MqttClient(
        url, f"t-{creds.username}", username=creds.username, password=creds.password
    )
    client.start()
    assert client.wait_connected(10)
    return client


def test_users_are_the_central_an_integrator_and_one_bridge_per_site(
    central: tuple[str, Path],
) -> None:
    url, creds = central
    assert sorted(p.stem for p in creds.glob("*.toml")) == [
        "bridge-site-a",
        "bridge-site-b",
        "central",
        "integrator",
    ]
    for path in creds.glob("*.toml"):
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        assert connack_code(url, doc["username"], doc["password"]) == 0
    assert connack_code(url, None, None) != 0


def test_a_site_bridge_logs_in_carries_its_summary_and_may_not_write_another_sites(
    central: tuple[str, Path], tmp_path: Path
) -> None:
    url, creds = central
    bridge = read_credentials(creds / "bridge-site-a.toml")
    site: Broker = start_broker(
        auth=BrokerAuth(
            "site-a", tmp_path / "site-a", bridge=bridge_conf("site-a", url, credentials=bridge)
        )
    )
    central_creds = read_credentials(creds / "central.toml")
    try:
        with Subscriber(
            url,
            "gridflex/v1/+/summary",
            username=central_creds.username,
            password=central_creds.password,
        ) as seen:
            # as site-a's bridge user, directly: another site's summary is refused by the ACL
            rogue = _login(url, creds / "bridge-site-a.toml")
            rogue.publish(summary_topic("site-b"), b'{"forged": 1}', qos=1)
            assert rogue.flush(10)
            rogue.stop()
            doc = tomllib.loads(site.credentials["pipeline"].read_text(encoding="utf-8"))
            pipeline = MqttClient(
                site.url, "t-pipeline", username=doc["username"], password=doc["password"]
            )
            pipeline.start()
            assert pipeline.wait_connected(10)
            pipeline.publish(summary_topic("site-a"), b'{"summary": "a"}', qos=1, retain=True)
            assert seen.wait_for(lambda m: any(t == summary_topic("site-a") for t, _ in m))
            pipeline.stop()
            assert [t for t, _ in seen.messages] == [summary_topic("site-a")]
        # and the central's target for site-a comes down through the logged-in bridge
        with Subscriber(site.url, target_topic("site-a"), **_integrator(site)) as down:
            boss = _login(url, creds / "central.toml")
            boss.publish(target_topic("site-a"), b'{"target": "a"}', qos=1, retain=True)
            assert down.wait_for(lambda m: len(m) == 1)
            boss.stop()
    finally:
        site.stop()


def _integrator(site: Broker) -> dict[str, str]:
    doc = tomllib.loads(site.credentials["integrator"].read_text(encoding="utf-8"))
    return {"username": doc["username"], "password": doc["password"]}
