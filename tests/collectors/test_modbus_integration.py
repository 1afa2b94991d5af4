"""The Modbus collector over real Modbus TCP (simulated inverters) and a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.baselines import PymodbusConnection
from collectors.modbus.connection import ConnectionFactory
from collectors.modbus.fast import LeanModbusClient
from collectors.modbus.poller import CollectorStats, run
from gridflex.broker import Broker
from gridflex.config import SiteConfig, parse_site
from gridflex.contract import AssetStatus, CollectorStatus, Telemetry, parse_payload
from gridflex.mqtt import MqttClient
from gridflex.net import free_port_block, wait_for_port
from simulators.inverter import InverterFleet
from tests.loop_helpers import LoopThread
from tests.mqtt_helpers import Subscriber

pytestmark = pytest.mark.integration

#: The collector's client, and pymodbus' as the reference it must agree with.
CLIENTS: list[ConnectionFactory] = [LeanModbusClient, PymodbusConnection]
CLIENT_IDS = ["lean", "pymodbus-oracle"]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def _site(broker: Broker, base_port: int, count: int) -> SiteConfig:
    return parse_site(
        {
            "site": {"id": f"t{uuid.uuid4().hex[:8]}"},
            "mqtt": {"url": broker.url},
            "modbus": {
                "poll_interval_ms": 200,
                "timeout_s": 0.5,
                "backoff_initial_s": 0.2,
                "backoff_max_s": 0.8,
            },
            "assets": [
                {
                    "id": f"inv{i}",
                    "kind": "inverter",
                    "host": "127.0.0.1",
                    "port": base_port + i,
                    "max_charge_w": 11000,
                }
                for i in range(count)
            ],
        }
    )


class Running:
    """A fleet and a collector running in the loop thread."""

    def __init__(
        self,
        lt: LoopThread,
        site: SiteConfig,
        fleet: InverterFleet,
        connection: ConnectionFactory = LeanModbusClient,
    ) -> None:
        self.lt, self.site, self.fleet = lt, site, fleet
        self.mqtt = MqttClient(site.mqtt.url, f"test-collector-{site.id}", clean_session=True)
        self.mqtt.start()
        assert self.mqtt.wait_connected(10)
        self.lt.run(fleet.start())

        async def _start() -> tuple[asyncio.Event, asyncio.Task[CollectorStats]]:
            stop = asyncio.Event()
            return stop, asyncio.create_task(run(site, self.mqtt, stop, connection=connection))

        self.stop_event, self.task = self.lt.run(_start())

    def stop(self) -> CollectorStats:
        async def _stop() -> CollectorStats:
            self.stop_event.set()
            stats = await self.task
            await self.fleet.stop()
            return stats

        stats = self.lt.run(_stop())
        self.mqtt.stop()
        return stats


def _telemetry(sub: Subscriber, site: str, asset: str) -> list[dict[str, Any]]:
    return sub.json_on(lambda t: t == f"gridflex/v1/{site}/inverter/{asset}/telemetry")


def _statuses(sub: Subscriber, site: str, asset: str) -> list[dict[str, Any]]:
    return sub.json_on(lambda t: t == f"gridflex/v1/{site}/inverter/{asset}/status")


def _collector_offline(sub: Subscriber) -> bool:
    last = sub.json_on(lambda t: t.endswith("/collector/modbus/status"))[-1:]
    return bool(last) and last[0]["online"] is False


@pytest.mark.parametrize("connection", CLIENTS, ids=CLIENT_IDS)
def test_collector_publishes_contract_telemetry_with_increasing_seq(
    mosquitto: Broker, loop_thread: LoopThread, connection: ConnectionFactory
) -> None:
    base = free_port_block(3)
    site = _site(mosquitto, base, 3)
    fleet = InverterFleet(3, base, seed=5)
    fleet.devices[0].model.write_setpoint(True, -3_000.0)  # discharge 3 kW
    fleet.devices[0].model.power_w = -3_000.0
    with Subscriber(mosquitto.url, f"gridflex/v1/{site.id}/#") as sub:
        running = Running(loop_thread, site, fleet, connection)
        try:
            assert sub.wait_for(
                lambda _m: all(len(_telemetry(sub, site.id, f"inv{i}")) >= 6 for i in range(3))
            )
        finally:
            running.stop()
        # the offline statuses published on the way out reach the subscriber a bit later
        assert sub.wait_for(
            lambda _m: (
                _collector_offline(sub)
                and all(
                    _statuses(sub, site.id, f"inv{i}")[-1]["state"] == "offline" for i in range(3)
                )
            )
        )
        for i in range(3):
            raw = [p for t, p in sub.messages if t.endswith(f"/inv{i}/telemetry")]
            messages = [parse_payload(p) for p in raw]
            assert all(isinstance(m, Telemetry) for m in messages)
            seqs = [m.seq for m in messages]  # type: ignore[attr-defined]
            assert seqs == sorted(set(seqs)), "seq strictly increases"
            assert len({m.boot for m in messages}) == 1  # type: ignore[attr-defined]
        first = _telemetry(sub, site.id, "inv0")[-1]
        assert first["power_w"] == -3_000.0
        assert first["setpoint_w"] == -3_000.0
        assert 49.0 < first["freq_hz"] < 51.0
        collector = [
            parse_payload(p) for t, p in sub.messages if t.endswith("/collector/modbus/status")
        ]
        assert isinstance(collector[0], CollectorStatus) and collector[0].online
        assert isinstance(collector[-1], CollectorStatus) and not collector[-1].online
        for i in range(3):
            last = parse_payload([p for t, p in sub.messages if t.endswith(f"/inv{i}/status")][-1])
            assert isinstance(last, AssetStatus) and last.state == "offline"


@pytest.mark.parametrize("connection", CLIENTS, ids=CLIENT_IDS)
def test_killed_device_goes_offline_others_keep_publishing_and_it_comes_back(
    mosquitto: Broker, loop_thread: LoopThread, connection: ConnectionFactory
) -> None:
    base = free_port_block(3)
    site = _site(mosquitto, base, 3)
    fleet = InverterFleet(3, base, seed=6)
    with Subscriber(mosquitto.url, f"gridflex/v1/{site.id}/#") as sub:
        running = Running(loop_thread, site, fleet, connection)
        try:
            assert sub.wait_for(lambda _m: len(_telemetry(sub, site.id, "inv1")) >= 3)
            loop_thread.run(fleet.stop_device(1))
            assert sub.wait_for(
                lambda _m: any(not s["online"] for s in _statuses(sub, site.id, "inv1"))
            )
            offline = next(s for s in _statuses(sub, site.id, "inv1") if not s["online"])
            assert offline["state"] == "offline"
            assert offline["consecutive_failures"] >= 1
            assert offline["retry_in_ms"] >= 200
            # the retained status tells a newcomer the device is offline
            with Subscriber(mosquitto.url, f"gridflex/v1/{site.id}/inverter/inv1/status") as late:
                assert late.wait_for(lambda m: len(m) >= 1)
                assert json.loads(late.messages[0][1])["online"] is False
            others_before = len(_telemetry(sub, site.id, "inv0"))
            assert sub.wait_for(
                lambda _m: len(_telemetry(sub, site.id, "inv0")) >= others_before + 5
            )
            seq_before = _telemetry(sub, site.id, "inv1")[-1]["seq"]
            loop_thread.run(fleet.start_device(1))
            assert sub.wait_for(lambda _m: _statuses(sub, site.id, "inv1")[-1]["online"])
            back = _statuses(sub, site.id, "inv1")[-1]
            assert back["state"] == "online" and back["consecutive_failures"] == 0
            assert sub.wait_for(lambda _m: _telemetry(sub, site.id, "inv1")[-1]["seq"] > seq_before)
        finally:
            stats = running.stop()
        assert stats.failures >= 1


@pytest.mark.parametrize("connection", CLIENTS, ids=CLIENT_IDS)
def test_device_with_a_broken_map_is_marked_error(
    mosquitto: Broker, loop_thread: LoopThread, connection: ConnectionFactory
) -> None:
    base = free_port_block(2)
    site = _site(mosquitto, base, 2)
    fleet = InverterFleet(2, base, seed=8)
    fleet.devices[1].image[0:4] = b"\x00\x00\x00\x00"  # no SunS marker
    with Subscriber(mosquitto.url, f"gridflex/v1/{site.id}/#") as sub:
        running = Running(loop_thread, site, fleet, connection)
        try:
            assert sub.wait_for(lambda _m: len(_statuses(sub, site.id, "inv1")) >= 2)
            assert sub.wait_for(lambda _m: len(_telemetry(sub, site.id, "inv0")) >= 3)
        finally:
            running.stop()
    first = _statuses(sub, site.id, "inv1")[0]
    assert (first["online"], first["state"]) == (False, "error")
    assert "SunSpec marker" in first["reason"]
    assert _telemetry(sub, site.id, "inv1") == []


def test_device_answering_garbage_is_marked_error_and_retried(
    mosquitto: Broker, loop_thread: LoopThread
) -> None:
    base = free_port_block(2)
    site = _site(mosquitto, base, 2)
    fleet = InverterFleet(1, base, seed=9)

    async def answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(260):  # every request gets bytes that are not Modbus TCP
            writer.write(b"\xde\xad\xbe\xef\x00\x07garbage")

    async def _serve() -> asyncio.Server:
        return await asyncio.start_server(answer_garbage, "127.0.0.1", base + 1)

    server = loop_thread.run(_serve())
    try:
        with Subscriber(mosquitto.url, f"gridflex/v1/{site.id}/#") as sub:
            running = Running(loop_thread, site, fleet)
            try:
                assert sub.wait_for(lambda _m: len(_statuses(sub, site.id, "inv1")) >= 2)
                assert sub.wait_for(lambda _m: len(_telemetry(sub, site.id, "inv0")) >= 3)
            finally:
                running.stop()
    finally:
        server.close()
    first, second = _statuses(sub, site.id, "inv1")[:2]
    assert (first["online"], first["state"]) == (False, "error")
    assert "not a Modbus TCP reply" in first["reason"]
    assert second["consecutive_failures"] == first["consecutive_failures"] + 1  # retried
    assert _telemetry(sub, site.id, "inv1") == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "collector_argv",
    [
        ["gridflex.cli", "collect", "modbus"],
        ["bench.baselines", "collect-modbus", "--modbus", "pymodbus", "--mqtt", "paho"],
    ],
    ids=["command", "pymodbus-paho-baseline"],
)
def test_collect_modbus_command_exits_0_on_sigterm_with_retained_offline(
    mosquitto: Broker, tmp_path: Path, collector_argv: list[str]
) -> None:
    """The command, and the benchmarks' library baseline built on the same collector."""
    base = free_port_block(2)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gridflex.cli",
            "sim",
            "inverters",
            "--count",
            "2",
            "--base-port",
            str(base),
            "--seed",
            "1",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        assert wait_for_port("127.0.0.1", base + 1)
        site_id = f"t{uuid.uuid4().hex[:8]}"
        site_file = tmp_path / "site.toml"
        assets = "".join(
            f'[[assets]]\nid = "inv{i}"\nkind = "inverter"\nhost = "127.0.0.1"\n'
            f"port = {base + i}\nmax_charge_w = 11000\n"
            for i in range(2)
        )
        site_file.write_text(
            f'[site]\nid = "{site_id}"\n[mqtt]\nurl = "{mosquitto.url}"\n{assets}', encoding="utf-8"
        )
        with Subscriber(mosquitto.url, f"gridflex/v1/{site_id}/#") as sub:
            collector = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    *collector_argv,
                    "--site",
                    str(site_file),
                    "--stats-file",
                    str(tmp_path / "stats.json"),
                ],
                cwd=ROOT,
                env=env,
            )
            assert sub.wait_for(lambda _m: len(_telemetry(sub, site_id, "inv1")) >= 3)
            collector.send_signal(signal.SIGTERM)
            assert collector.wait(timeout=30) == 0
        with Subscriber(mosquitto.url, f"gridflex/v1/{site_id}/+/+/status") as late:
            assert late.wait_for(lambda m: len(m) >= 3)
            retained = {t: json.loads(p) for t, p in late.messages}
        assert retained[f"gridflex/v1/{site_id}/collector/modbus/status"]["online"] is False
        assert retained[f"gridflex/v1/{site_id}/inverter/inv0/status"]["state"] == "offline"
        stats = json.loads((tmp_path / "stats.json").read_text(encoding="utf-8"))
        assert stats["polls"] > 0
    finally:
        sim.send_signal(signal.SIGTERM)
        assert sim.wait(timeout=30) == 0
