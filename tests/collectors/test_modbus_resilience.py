"""The Modbus collector under misbehaving devices: real Modbus TCP and a real Mosquitto.

A lost reply or a busy device costs one poll slot; only failures in a row take the device
offline (and it is rediscovered); an unexpected error anywhere in the poll chain marks the
device ``error`` and retries it, never silently ends its task.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import collectors.modbus.poller as poller_module
from collectors.modbus.poller import CollectorStats, run
from gridflex.broker import Broker
from gridflex.config import SiteConfig, parse_site
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.net import free_port_block
from simulators.inverter import InverterFleet

pytestmark = pytest.mark.integration


def _site(broker: Broker, port: int) -> SiteConfig:
    return parse_site(
        {
            "site": {"id": f"r{uuid.uuid4().hex[:8]}"},
            "mqtt": {"url": broker.url},
            "modbus": {
                "poll_interval_ms": 200,
                "timeout_s": 0.3,
                "backoff_initial_s": 0.2,
                "failures_before_offline": 3,
            },
            "assets": [
                {"id": "inv1", "kind": "inverter", "host": "127.0.0.1", "port": port}
                | {"max_charge_w": 10_000.0, "max_discharge_w": 10_000.0}
            ],
        }
    )


class Watch:
    """Telemetry seqs and status states of inv1, as an integrator sees them."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.states: list[tuple[str, str | None]] = []

    def on_message(self, topic: str, payload: bytes) -> None:
        if not payload:
            return
        body: dict[str, Any] = json.loads(payload)
        if topic.endswith("/telemetry"):
            self.seqs.append(body["seq"])
        elif topic.endswith("/inv1/status"):
            self.states.append((body["state"], body.get("reason")))


async def _until(check: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def _run(
    broker: Broker, body: Callable[[InverterFleet, Watch, CollectorStats], Awaitable[None]]
) -> None:
    port = free_port_block(1)
    site = _site(broker, port)

    async def scenario() -> None:
        async with InverterFleet(1, port, seed=5) as fleet:
            watch = Watch()
            observer = AsyncMqttClient(broker.url, f"watch-{site.id}", clean_session=True)
            await observer.start()
            assert await observer.wait_connected(10.0)
            observer.subscribe(f"gridflex/v1/{site.id}/inverter/inv1/#", watch.on_message)
            publisher = AsyncMqttClient(broker.url, f"collector-{site.id}", clean_session=True)
            await publisher.start()
            assert await publisher.wait_connected(10.0)
            await asyncio.sleep(0.2)  # the SUBACK
            stats = CollectorStats()
            stop = asyncio.Event()
            task = asyncio.create_task(run(site, publisher, stop, stats=stats))
            try:
                await _until(lambda: len(watch.seqs) >= 3, "no telemetry")
                await body(fleet, watch, stats)
            finally:
                stop.set()
                await task
                observer.publish(f"gridflex/v1/{site.id}/inverter/inv1/status", b"", retain=True)
                await asyncio.sleep(0.1)
                await publisher.stop()
                await observer.stop()

    asyncio.run(scenario())


def test_one_lost_reply_costs_one_slot_not_the_connection(mosquitto: Broker) -> None:
    async def body(fleet: InverterFleet, watch: Watch, stats: CollectorStats) -> None:
        fleet.devices[0].unanswered = 1
        seen = len(watch.seqs)
        await _until(lambda: stats.slot_failures == 1, "the lost reply was not counted")
        await _until(lambda: len(watch.seqs) >= seen + 5, "polling did not go on")
        assert [state for state, _ in watch.states] == ["online"]  # never offline
        assert stats.failures == 0
        assert watch.seqs == sorted(set(watch.seqs))  # one connection, one boot: no reset

    _run(mosquitto, body)


def test_a_busy_reply_costs_one_slot(mosquitto: Broker) -> None:
    async def body(fleet: InverterFleet, watch: Watch, stats: CollectorStats) -> None:
        device = fleet.devices[0]
        answer = device.handle_pdu
        busy = {"left": 1}

        def busy_once(unit_id: int, pdu: bytes) -> bytes:
            if busy["left"]:
                busy["left"] -= 1
                return bytes((pdu[0] | 0x80, 6))  # exception 6: server device busy
            return answer(unit_id, pdu)

        device.handle_pdu = busy_once  # type: ignore[method-assign]
        seen = len(watch.seqs)
        await _until(lambda: stats.slot_failures == 1, "the busy reply was not counted")
        await _until(lambda: len(watch.seqs) >= seen + 5, "polling did not go on")
        assert [state for state, _ in watch.states] == ["online"]

    _run(mosquitto, body)


def test_failures_in_a_row_take_the_device_offline_and_it_is_rediscovered(
    mosquitto: Broker,
) -> None:
    async def body(fleet: InverterFleet, watch: Watch, stats: CollectorStats) -> None:
        fleet.devices[0].unanswered = 3  # = failures_before_offline
        await _until(lambda: len(watch.states) >= 3, "not offline and back", timeout_s=15)
        states = [state for state, _ in watch.states]
        assert states[:3] == ["online", "offline", "online"]
        assert stats.failures == 1 and stats.slot_failures == 3

    _run(mosquitto, body)


def test_a_rediscovered_device_starts_with_no_slot_failures_counted(mosquitto: Broker) -> None:
    # Three lost replies take the device offline; the first poll after its rediscovery
    # then gets a busy reply: that is one failure of the new connection, not the fourth.
    async def body(fleet: InverterFleet, watch: Watch, stats: CollectorStats) -> None:
        device = fleet.devices[0]
        answer = device.handle_pdu
        common = device.model_address(1)  # discovery's last read: all of the common model
        last_reads = {a.to_bytes(2, "big") for a in (common, common + 2)}
        phase = {"armed": False, "busy": 0}

        def busy_after_rediscovery(unit_id: int, pdu: bytes) -> bytes:
            if phase["armed"]:
                phase["armed"], phase["busy"] = False, phase["busy"] + 1
                return bytes((pdu[0] | 0x80, 6))  # exception 6: server device busy
            whole_model = pdu[1:3] in last_reads and int.from_bytes(pdu[3:5], "big") > 2
            if stats.slot_failures >= 3 and not phase["busy"] and whole_model:
                phase["armed"] = True  # the rediscovery is done: next is the first poll
            return answer(unit_id, pdu)

        device.handle_pdu = busy_after_rediscovery  # type: ignore[method-assign]
        device.unanswered = 3  # = failures_before_offline
        await _until(lambda: phase["busy"] == 1, "no busy reply after the rediscovery", 15)
        seen = len(watch.seqs)
        await _until(lambda: len(watch.seqs) >= seen + 5, "polling did not go on")
        assert [state for state, _ in watch.states] == ["online", "offline", "online"]
        assert stats.failures == 1 and stats.slot_failures == 4

    _run(mosquitto, body)


def test_an_unexpected_error_marks_the_device_and_it_is_retried(
    mosquitto: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    decode = poller_module.decode_data
    broken = {"left": 1}

    def decode_or_fail(*args: Any) -> Any:
        if broken["left"]:
            broken["left"] -= 1
            raise RuntimeError("a bug in decoding")
        return decode(*args)

    async def body(fleet: InverterFleet, watch: Watch, stats: CollectorStats) -> None:
        monkeypatch.setattr(poller_module, "decode_data", decode_or_fail)
        await _until(lambda: len(watch.states) >= 3, "not marked and back", timeout_s=15)
        (first, _), (second, reason), (third, _) = watch.states[:3]
        assert (first, second, third) == ("online", "error", "online")
        assert reason is not None and reason.startswith("internal error: RuntimeError")

    _run(mosquitto, body)
