"""A Modbus link that answers garbage, then heals: misbehaving, not lost (issue 9's finding).

A tiny asyncio server stands between the SunSpec simulator and both the real collector and
the control service, and relays each request; while told to, it mangles every reply
(another transaction's, not Modbus TCP, an exception, truncated). The collector marks the
device ``error`` and retries it; control acks each command ``failed`` meanwhile and latches
nothing; once the replies are good again the device is rediscovered and the next command is
``applied``. A device that says nothing at all is a lost device, and that one is latched.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from collectors.modbus.poller import run as collect
from control.faults import LOST_DEVICE
from control.service import ControlService
from gridflex.broker import Broker
from gridflex.config import SiteConfig, parse_site
from gridflex.contract import AssetStatus, collector_topic, parse_payload, status_topic
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.net import free_port, free_port_block
from simulators.inverter import InverterFleet
from tests.control.test_service import SITE, Observer, _command
from tests.control.test_service_safety import Collector, _now_ms, _run, _until

pytestmark = pytest.mark.integration


class Link:
    """A Modbus TCP relay to ``upstream_port`` that can garble its replies or stay silent."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.mode = "relay"  # or "garbage", "silent"
        self.mangled = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Link:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    def _mangle(self, reply: bytes) -> bytes:
        self.mangled += 1
        tid, unit, pdu = reply[:2], reply[6:7], reply[7:]
        how = self.mangled % 4
        if how == 0:  # another transaction's reply (the request then times out)
            other = ((int.from_bytes(tid, "big") + 7) & 0xFFFF).to_bytes(2, "big")
            return other + reply[2:]
        if how == 1:  # not Modbus TCP: protocol id 7
            return tid + b"\x00\x07" + reply[4:]
        if how == 2:  # an exception 4 (server device failure)
            return tid + b"\x00\x00\x00\x03" + unit + bytes([pdu[0] | 0x80, 4])
        return reply[: len(reply) // 2]  # truncated: the rest never comes

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._writers += [writer, up_writer]
        try:
            while True:
                header = await reader.readexactly(7)
                request = header + await reader.readexactly(int.from_bytes(header[4:6]) - 1)
                if self.mode == "silent":
                    continue  # heard, never answered
                up_writer.write(request)
                head = await up_reader.readexactly(7)
                reply = head + await up_reader.readexactly(int.from_bytes(head[4:6]) - 1)
                writer.write(self._mangle(reply) if self.mode == "garbage" else reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()


def _site(broker: Broker, port: int) -> SiteConfig:
    return parse_site(
        {
            "site": {"id": SITE},
            "mqtt": {"url": broker.url},
            "modbus": {"timeout_s": 0.3, "backoff_initial_s": 0.1, "backoff_max_s": 0.2},
            "control": {"lost_after_failures": 2},
            "assets": [
                {"id": "inv1", "kind": "inverter", "host": "127.0.0.1", "port": port,
                 "max_charge_w": 10_000.0, "max_discharge_w": 10_000.0},
            ],
        }
    )  # fmt: skip


async def _with_collector(site: SiteConfig, body: Any) -> None:
    """Run the real Modbus collector around ``body`` (and clear its retained presence)."""
    publisher = AsyncMqttClient(site.mqtt.url, f"test-collector-{time.time_ns()}")
    await publisher.start()
    stop = asyncio.Event()
    polling = asyncio.create_task(collect(site, publisher, stop))
    try:
        await body()
    finally:
        stop.set()
        await polling
        publisher.publish(collector_topic(SITE, "modbus"), b"", qos=1, retain=True)
        await asyncio.sleep(0.1)
        await publisher.stop()


def _watch_statuses(obs: Observer) -> list[AssetStatus]:
    statuses: list[AssetStatus] = []

    def on_status(_topic: str, payload: bytes) -> None:
        with contextlib.suppress(Exception):  # the retained status cleared: empty
            status = parse_payload(payload)
            if isinstance(status, AssetStatus):
                statuses.append(status)

    obs.mqtt.subscribe(status_topic(SITE, "inverter", "inv1"), on_status, qos=1)
    return statuses


def test_a_device_answering_garbage_gets_failed_acks_no_latch_and_applied_once_healed(
    mosquitto: Broker, tmp_path: Path
) -> None:
    sim_port = free_port_block(1)
    fleet = InverterFleet(1, sim_port, seed=51)
    sim = fleet.devices[0]
    link = Link(sim_port)
    site = _site(mosquitto, link.port)  # the collector and control reach it through the link

    async def body(obs: Observer, _collector: Collector, service: ControlService) -> None:
        async with link:
            statuses = _watch_statuses(obs)

            async def scenario() -> None:
                await _until(lambda: service.live.fresh("inv1", _now_ms()) is not None, "poll")
                obs.send(_command("inv1", "a1", 2_000.0))
                assert (await obs.ack("a1")).result == "applied"

                link.mode = "garbage"
                seen = len(statuses)

                def errors_in_a_row() -> int:
                    garbled = [s for s in statuses[seen:] if not s.online]
                    return max((s.consecutive_failures for s in garbled), default=0)

                await _until(lambda: errors_in_a_row() >= 4, "no run of error statuses", 20.0)
                for i in range(2):  # the open connection, then a fresh one: both garbled
                    obs.send(_command("inv1", f"g{i}", 3_000.0 + i))
                    ack = await obs.ack(f"g{i}")
                    assert ack.result == "failed", ack
                garbled = [s for s in statuses[seen:] if not s.online]
                assert {s.state for s in garbled} == {"error"}, [s.reason for s in garbled]
                assert service.faults.latched("inv1") == []  # misbehaving, not lost

                link.mode = "relay"
                healed = len(statuses)
                await _until(lambda: any(s.online for s in statuses[healed:]), "not back", 20.0)
                obs.send(_command("inv1", "h1", 4_000.0))
                ack = await obs.ack("h1")
                assert (ack.result, ack.applied_w, ack.rules) == ("applied", 4_000.0, []), ack
                assert sim.decode_point(704, "WSet") == -4_000  # SunSpec sign: + injection
                assert service.faults.latched("inv1") == []

            await _with_collector(site, scenario)

    _run(fleet, mosquitto, site, tmp_path, body)


def test_a_device_that_says_nothing_is_a_lost_device_latched(
    mosquitto: Broker, tmp_path: Path
) -> None:
    sim_port = free_port_block(1)
    fleet = InverterFleet(1, sim_port, seed=52)
    link = Link(sim_port)
    link.mode = "silent"
    site = _site(mosquitto, link.port)

    async def body(obs: Observer, _collector: Collector, service: ControlService) -> None:
        async with link:
            statuses = _watch_statuses(obs)

            async def scenario() -> None:
                await _until(lambda: service.faults.latched("inv1") != [], "not latched", 20.0)
                assert [f.code for f in service.faults.latched("inv1")] == [LOST_DEVICE]
                down = [s for s in statuses if not s.online]
                assert down and {s.state for s in down} == {"offline"}

            await _with_collector(site, scenario)

    _run(fleet, mosquitto, site, tmp_path, body)
