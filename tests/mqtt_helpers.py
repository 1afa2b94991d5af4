"""Test helper: subscribe to a real broker, collect messages, wait for a condition."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from gridflex.mqtt import MqttClient, parse_url


class Subscriber:
    """Collects every message on ``topic_filter`` (QoS 1) into ``messages``."""

    def __init__(
        self,
        url: str,
        topic_filter: str = "#",
        *,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self.client = MqttClient(
            url,
            f"test-sub-{uuid.uuid4().hex[:8]}",
            username=username,
            password=password,
            clean_session=True,
        )
        self.client.subscribe(topic_filter, self._on_message)
        self.client.start()
        if not self.client.wait_connected(10):
            raise RuntimeError(f"test subscriber could not connect to {url}")
        time.sleep(0.1)  # let the SUBACK arrive before the test publishes

    def _on_message(self, topic: str, payload: bytes) -> None:
        with self._cond:
            self.messages.append((topic, payload))
            self._cond.notify_all()

    def json_on(self, predicate: Callable[[str], bool]) -> list[dict[str, Any]]:
        """Decoded JSON payloads of the messages whose topic satisfies ``predicate``."""
        with self._cond:
            picked = [p for t, p in self.messages if predicate(t)]
        return [json.loads(p) for p in picked]

    def wait_for(
        self, condition: Callable[[list[tuple[str, bytes]]], bool], timeout_s: float = 15.0
    ) -> bool:
        """Wait until ``condition(messages)`` holds; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not condition(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.2))
        return True

    def close(self) -> None:
        """Disconnect."""
        self.client.stop(flush_timeout_s=0.5)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def connack_code(
    url: str, username: str | None, password: str | None, ca: str | None = None
) -> int:
    """The CONNACK return code a broker gives these credentials (paho, MQTT 3.1.1)."""
    host, port, use_tls = parse_url(url)
    result: list[int] = []
    done = threading.Event()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    if username is not None:
        client.username_pw_set(username, password)
    if use_tls:
        client.tls_set(ca_certs=ca)

    def on_connect(_c: paho.Client, _u: object, _f: object, rc: object, _p: object) -> None:
        result.append(int(getattr(rc, "value", rc)))  # type: ignore[call-overload]
        done.set()

    client.on_connect = on_connect
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        assert done.wait(15), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]
