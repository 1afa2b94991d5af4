"""The MQTT client seam of the collectors' commands: one production client, one baseline.

``gridflex collect modbus`` and ``gridflex collect ocpp`` run the native asyncio client
(:class:`gridflex.mqtt_asyncio.AsyncMqttClient`); no option selects another. Their
``main`` takes the client's maker as a keyword (``MqttClientFactory``, default
``AsyncMqttClient``, the class itself) so that the benchmarks' baseline
(``bench/baselines.py``) can run the same collector with paho's threaded client
(``gridflex.mqtt.MqttClient`` behind an asyncio lifecycle) and print the ratio.

``MqttPublisher`` and ``MqttSubscriber`` are what components take of a client
(``collectors.modbus.poller.Publisher`` is ``MqttPublisher``); ``ServiceMqttClient`` adds
the lifecycle a command drives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["MqttClientFactory", "MqttPublisher", "MqttSubscriber", "ServiceMqttClient"]


class MqttPublisher(Protocol):
    """What a publishing component needs of an MQTT client (the Modbus poller's)."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue one message; False when the bounded queue dropped it."""
        ...


class MqttSubscriber(MqttPublisher, Protocol):
    """A client that also subscribes."""

    def subscribe(
        self, topic_filter: str, callback: Callable[[str, bytes], None], qos: int = 1
    ) -> None:
        """Subscribe (again after every reconnect); the callback gets topic and payload."""
        ...


class ServiceMqttClient(MqttSubscriber, Protocol):
    """What a collector's command needs of its MQTT client: a lifecycle on its loop."""

    async def start(self) -> None:
        """Connect in the background; keeps reconnecting until ``stop``."""
        ...

    async def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """True once connected, False after ``timeout_s``."""
        ...

    async def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Drain the outgoing queue (bounded) and disconnect."""
        ...


class MqttClientFactory(Protocol):
    """Makes a collector's MQTT client (``AsyncMqttClient``'s constructor fits)."""

    def __call__(
        self,
        url: str,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        will: tuple[str, bytes] | None = None,
        queue_limit: int = 100_000,
        keepalive_s: int = 30,
        max_inflight: int = 100,
    ) -> ServiceMqttClient:
        """A client, not yet started."""
        ...
