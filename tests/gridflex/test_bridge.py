"""A real site Mosquitto bridged to a real central Mosquitto (``broker-config --central-url``)."""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridflex.broker import Broker, BrokerAuth, find_mosquitto, start_broker
from gridflex.broker_config import Role, bridge_conf
from gridflex.contract import status_topic, summary_topic, target_topic, telemetry_topic
from gridflex.mqtt import MqttClient
from tests.mqtt_helpers import Subscriber

SITE = "bridged-site"

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="needs mosquitto")


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    """(site, central): the site broker bridges to the central one."""
    central = start_broker("mosquitto")
    try:
        site = start_broker(
            auth=BrokerAuth(SITE, tmp_path / "site", bridge=bridge_conf(SITE, central.url))
        )
    except Exception:
        central.stop()
        raise
    yield site, central
    site.stop()
    central.stop()


def _client(broker: Broker, role: Role) -> MqttClient:
    doc = tomllib.loads(broker.credentials[role].read_text(encoding="utf-8"))
    client = MqttClient(
        broker.url,
        f"test-{role}-{uuid.uuid4().hex[:6]}",
        username=doc["username"],
        password=doc["password"],
        clean_session=True,
    )
    client.start()
    assert client.wait_connected(10)
    return client


def test_the_summary_reaches_the_central_broker_and_telemetry_and_statuses_do_not(
    brokers: tuple[Broker, Broker],
) -> None:
    site, central = brokers
    collector, pipeline = _client(site, "collector"), _client(site, "pipeline")
    with Subscriber(central.url, "gridflex/v1/#") as upstairs:
        try:
            # Telemetry and a status first, acknowledged by the site broker, then the
            # summary: the bridge forwards in order, so had they crossed they would be
            # there before the summary.
            collector.publish(telemetry_topic(SITE, "inverter", "inv-1"), b'{"t": 1}', qos=1)
            collector.publish(status_topic(SITE, "inverter", "inv-1"), b'{"s": 1}', retain=True)
            assert collector.flush(10)
            pipeline.publish(summary_topic(SITE), b'{"summary": 1}', qos=1, retain=True)
            assert upstairs.wait_for(lambda m: any(t == summary_topic(SITE) for t, _ in m))
            assert [t for t, _ in upstairs.messages] == [summary_topic(SITE)]
        finally:
            collector.stop()
            pipeline.stop()
    # retained on the central broker: a central started later still gets the summary
    with Subscriber(central.url, summary_topic(SITE)) as late:
        assert late.wait_for(lambda m: m == [(summary_topic(SITE), b'{"summary": 1}')])


def test_the_sites_target_comes_down_and_another_sites_does_not(
    brokers: tuple[Broker, Broker],
) -> None:
    site, central = brokers
    with _Reader(site) as reader:
        publisher = MqttClient(central.url, f"test-central-{uuid.uuid4().hex[:6]}")
        publisher.start()
        assert publisher.wait_connected(10)
        try:
            publisher.publish(target_topic("other-site"), b'{"other": 1}', qos=1, retain=True)
            publisher.publish(target_topic(SITE), b'{"target": 1}', qos=1, retain=True)
            assert reader.sub.wait_for(lambda m: any(t == target_topic(SITE) for t, _ in m))
        finally:
            publisher.stop()
        assert {t for t, _ in reader.sub.messages} == {target_topic(SITE)}


class _Reader:
    """The site's integrator role (it reads everything) on every site's target topic."""

    def __init__(self, site: Broker) -> None:
        doc = tomllib.loads(site.credentials["integrator"].read_text(encoding="utf-8"))
        self.sub = Subscriber(
            site.url, "gridflex/v1/+/target", username=doc["username"], password=doc["password"]
        )

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.sub.close()
