"""The MQTT client wrapper against a real Mosquitto: delivery, last will, bounded queue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gridflex.broker import Broker, start_broker
from gridflex.mqtt import MqttClient, parse_url
from tests.mqtt_helpers import Subscriber

pytestmark = pytest.mark.integration


def test_parse_url_understands_mqtt_and_mqtts() -> None:
    assert parse_url("mqtt://10.0.0.2:1884") == ("10.0.0.2", 1884, False)
    assert parse_url("mqtts://broker") == ("broker", 8883, True)
    with pytest.raises(ValueError, match="expected mqtt://"):
        parse_url("http://x")


def test_shared_subscription_delivers_to_its_callback(mosquitto: Broker) -> None:
    got: list[tuple[str, bytes]] = []
    client = MqttClient(mosquitto.url, "test-share-sub", clean_session=True)
    client.subscribe("$share/g1/t/share/+", lambda t, p: got.append((t, p)))
    client.start()
    try:
        assert client.wait_connected(10)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            client.publish("t/share/a", b"x")  # until the SUBACK is in, a message may pass
            time.sleep(0.1)
    finally:
        client.stop()
    assert got and got[0] == ("t/share/a", b"x")


def test_published_messages_arrive_once_in_order(mosquitto: Broker) -> None:
    with Subscriber(mosquitto.url, "t/order") as sub:
        pub = MqttClient(mosquitto.url, "test-order-pub")
        pub.start()
        assert pub.wait_connected(10)
        for i in range(200):
            assert pub.publish("t/order", str(i).encode())
        assert pub.flush(10)
        pub.stop()
        assert sub.wait_for(lambda m: len(m) >= 200)
        assert [int(p) for _t, p in sub.messages] == list(range(200))


def test_last_will_marks_a_killed_process_offline(mosquitto: Broker) -> None:
    script = textwrap.dedent(
        f"""
        import time
        from gridflex.mqtt import MqttClient
        c = MqttClient({mosquitto.url!r}, "test-will", keepalive_s=5,
                       will=("t/will", b'{{"online": false}}'))
        c.start()
        c.wait_connected(10)
        c.publish("t/will", b'{{"online": true}}', retain=True)
        c.flush(5)
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        with Subscriber(mosquitto.url, "t/will") as sub:
            assert sub.wait_for(lambda m: any(b"true" in p for _t, p in m))
            os.kill(proc.pid, signal.SIGKILL)
            assert sub.wait_for(lambda m: json.loads(m[-1][1]) == {"online": False}, 20)
    finally:
        proc.kill()
        proc.wait()


def test_queue_is_bounded_while_the_broker_is_down_and_drains_on_reconnect(
    tmp_path: Path,
) -> None:
    store = tmp_path / "mosquitto-store"
    store.mkdir()
    broker = start_broker("mosquitto", persistence_dir=store)
    port = broker.port
    # A subscriber with a persistent session: the broker keeps what it misses.
    sub_client = MqttClient(broker.url, "test-queue-sub", clean_session=False)
    got: list[bytes] = []
    sub_client.subscribe("t/queue", lambda _t, p: got.append(p))
    sub_client.start()
    assert sub_client.wait_connected(10)
    sub_client.stop()

    pub = MqttClient(broker.url, "test-queue-pub", queue_limit=50)
    pub.start()
    assert pub.wait_connected(10)
    broker.stop()
    deadline = time.monotonic() + 10
    while pub.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pub.connected

    accepted = [pub.publish("t/queue", str(i).encode()) for i in range(80)]
    assert accepted.count(True) == 50
    assert pub.stats.as_dict()["dropped"] == 30

    broker = start_broker("mosquitto", port=port, persistence_dir=store)
    try:
        assert pub.wait_connected(20)
        assert pub.flush(10)
        pub.stop()
        sub_client = MqttClient(broker.url, "test-queue-sub", clean_session=False)
        sub_client.subscribe("t/queue", lambda _t, p: got.append(p))
        sub_client.start()
        deadline = time.monotonic() + 10
        while len(got) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        sub_client.stop()
        assert sorted(int(p) for p in got) == list(range(50))
    finally:
        broker.stop()


def test_embedded_broker_carries_qos1_messages() -> None:
    broker = start_broker("amqtt")
    try:
        with Subscriber(broker.url, "t/embedded") as sub:
            pub = MqttClient(broker.url, "test-embedded-pub")
            pub.start()
            assert pub.wait_connected(10)
            pub.publish("t/embedded", b"hello")
            assert sub.wait_for(lambda m: len(m) == 1)
            pub.stop()
    finally:
        broker.stop()
