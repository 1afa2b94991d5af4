"""The control service's safety rules over real MQTT and Modbus TCP: faults and their latch,
the site's headroom, SoC from telemetry, derating, ramp, manual commands and their override.

Telemetry and asset statuses are published by the test as a collector would (the collector
itself is tested elsewhere); the inverters are the SunSpec simulator on real sockets.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from collectors.modbus.poller import run as collect
from control.faults import FaultLatch
from control.ledger import Ledger
from control.operator import Operator
from control.service import ControlService
from gridflex.broker import Broker
from gridflex.config import SiteConfig, parse_site
from gridflex.contract import AssetStatus, Telemetry, status_topic, telemetry_topic
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.net import free_port_block
from simulators.inverter import InverterFleet
from tests.control.test_service import SITE, Observer, _command

pytestmark = pytest.mark.integration


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _site(broker: Broker, ports: dict[str, int], **site: Any) -> SiteConfig:
    assets: list[dict[str, Any]] = [
        {
            "id": asset_id,
            "kind": "inverter",
            "host": "127.0.0.1",
            "port": port,
            "max_charge_w": 10_000.0,
            "max_discharge_w": 10_000.0,
            "soc_min_pct": 10.0,
            "soc_max_pct": 90.0,
            **site.pop(f"{asset_id}_extra", {}),
        }
        for asset_id, port in ports.items()
    ]
    return parse_site(
        {
            "site": {"id": SITE, **site},
            "mqtt": {"url": broker.url},
            "modbus": {"timeout_s": 1.0},
            "assets": assets,
        }
    )


class Collector:
    """Publishes telemetry and statuses the way the collectors do."""

    def __init__(self, mqtt: AsyncMqttClient) -> None:
        self.mqtt = mqtt
        self.seq = 0

    def reading(self, asset: str, power_w: float, **fields: Any) -> None:
        self.seq += 1
        reading = Telemetry(
            site=SITE,
            asset=asset,
            kind="inverter",
            ts_ms=_now_ms(),
            seq=self.seq,
            boot="b1",
            power_w=power_w,
            **fields,
        )
        self.mqtt.publish(telemetry_topic(SITE, "inverter", asset), reading.to_json(), qos=0)

    def status(self, asset: str, **fields: Any) -> None:
        status = AssetStatus(site=SITE, asset=asset, kind="inverter", ts_ms=_now_ms(), **fields)
        topic = status_topic(SITE, "inverter", asset)
        self.mqtt.publish(topic, status.to_json(), qos=1, retain=True)


async def _until(check: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def _run(fleet: InverterFleet, broker: Broker, site: SiteConfig, tmp_path: Path, body: Any) -> None:
    """Serve the fleet, run the service with a persistent fault latch, run ``body``."""
    ledger_path = tmp_path / "ledger.sqlite3"

    async def scenario() -> None:
        async with fleet:
            observer = Observer(broker)
            await observer.start()
            collector = Collector(observer.mqtt)
            mqtt = AsyncMqttClient(broker.url, f"gridflex-control-{SITE}-{time.time_ns()}")
            with Ledger(ledger_path) as ledger, FaultLatch(ledger_path) as faults:
                service = ControlService(site, ledger, mqtt, faults=faults)
                await mqtt.start()
                assert await mqtt.wait_connected(10.0)
                stop = asyncio.Event()
                runner = asyncio.create_task(service.run(stop))
                await asyncio.sleep(0.3)  # the SUBACKs
                try:
                    await body(observer, collector, service)
                finally:
                    stop.set()
                    await runner
                    await mqtt.stop()
                    # leave no retained status behind on the shared broker
                    for asset in service.assets:
                        observer.mqtt.publish(
                            status_topic(SITE, "inverter", asset), b"", qos=1, retain=True
                        )
                    await asyncio.sleep(0.1)
                    await observer.mqtt.stop()

    asyncio.run(scenario())


def test_a_ground_fault_forces_0_w_and_stays_latched_until_cleared(
    mosquitto: Broker, tmp_path: Path
) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=11)
    sim = fleet.devices[0]
    site = _site(mosquitto, {"inv1": base})

    async def body(obs: Observer, collector: Collector, service: ControlService) -> None:
        collector.reading("inv1", 0.0, soc_pct=50.0)
        obs.send(_command("inv1", "g1", -4_000.0))
        assert (await obs.ack("g1")).result == "applied"
        assert sim.decode_point(704, "WSet") == 4_000  # SunSpec sign: + injection

        collector.status("inv1", online=True, state="faulted", faults=["Error 0x04"])
        # the emergency stop: 0 W without any command
        await _until(lambda: sim.decode_point(704, "WSet") == 0, "no emergency stop")
        view = Operator(service).asset_view("inv1")
        assert view is not None and view["faults"] == ["Error 0x04"]

        # the device reports healthy again, but the latch holds until an operator clears it
        collector.status("inv1", online=True, state="online")
        obs.send(_command("inv1", "g2", -4_000.0))
        held = await obs.ack("g2")
        assert (held.result, held.applied_w, held.rules) == ("clamped", 0.0, ["fault"])
        assert held.reason is not None and "Error 0x04" in held.reason
        assert sim.decode_point(704, "WSet") == 0

        assert await Operator(service).clear_fault("inv1") == ["Error 0x04"]
        obs.send(_command("inv1", "g3", -4_000.0))
        assert (await obs.ack("g3")).result == "applied"
        assert sim.decode_point(704, "WSet") == 4_000

    _run(fleet, mosquitto, site, tmp_path, body)
    # the latch survives a restart of the writer: nothing latched now, as it was cleared
    with FaultLatch(tmp_path / "ledger.sqlite3") as faults:
        assert faults.latched("inv1") == []


def test_a_latched_fault_survives_a_writer_restart(mosquitto: Broker, tmp_path: Path) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=12)
    sim = fleet.devices[0]
    site = _site(mosquitto, {"inv1": base})

    async def first(obs: Observer, collector: Collector, service: ControlService) -> None:
        collector.reading("inv1", 0.0, soc_pct=50.0, status="fault", device_status="FAULT")
        await _until(lambda: service.faults.latched("inv1") != [], "fault not latched")

    async def second(obs: Observer, collector: Collector, service: ControlService) -> None:
        assert [f.code for f in service.faults.latched("inv1")] == ["FAULT"]
        obs.send(_command("inv1", "r1", 3_000.0))
        ack = await obs.ack("r1")
        assert (ack.result, ack.applied_w, ack.rules) == ("clamped", 0.0, ["fault"])
        assert sim.decode_point(704, "WSet") == 0

    _run(fleet, mosquitto, site, tmp_path, first)
    _run(fleet, mosquitto, site, tmp_path, second)


def test_a_lost_device_is_a_latched_fault(mosquitto: Broker, tmp_path: Path) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=13)
    site = _site(mosquitto, {"inv1": base})

    async def body(obs: Observer, collector: Collector, service: ControlService) -> None:
        collector.status("inv1", online=False, state="offline", consecutive_failures=1)
        await asyncio.sleep(0.3)
        assert service.faults.latched("inv1") == []  # one failed poll is not a lost device
        collector.status(
            "inv1", online=False, state="offline", consecutive_failures=3, reason="timeout"
        )
        await _until(lambda: service.faults.latched("inv1") != [], "lost device not latched")
        assert service.faults.describe("inv1") == "lost device (timeout)"

    _run(fleet, mosquitto, site, tmp_path, body)


def test_site_import_limit_counts_the_other_assets(mosquitto: Broker, tmp_path: Path) -> None:
    base = free_port_block(2)
    fleet = InverterFleet(2, base, seed=14)
    site = _site(mosquitto, {"a": base, "b": base + 1}, max_import_w=10_000.0)

    async def body(obs: Observer, collector: Collector, service: ControlService) -> None:
        collector.reading("b", 8_000.0, soc_pct=50.0)
        collector.reading("a", 0.0, soc_pct=50.0)
        await _until(lambda: service.live.fresh("b", _now_ms()) is not None, "no telemetry")
        obs.send(_command("a", "s1", 5_000.0))
        refused = await obs.ack("s1")
        assert (refused.result, refused.reason) == ("rejected", "max capacity reached")
        assert refused.rules == ["site"]
        obs.send(_command("a", "s2", 1_500.0))
        assert (await obs.ack("s2")).result == "applied"

    _run(fleet, mosquitto, site, tmp_path, body)


def test_soc_floor_from_telemetry_blocks_discharge(mosquitto: Broker, tmp_path: Path) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=15)
    sim = fleet.devices[0]
    site = _site(mosquitto, {"inv1": base})

    async def body(obs: Observer, collector: Collector, service: ControlService) -> None:
        collector.reading("inv1", 0.0, soc_pct=9.0)
        await _until(lambda: service.live.soc_pct("inv1", _now_ms()) == 9.0, "no telemetry")
        obs.send(_command("inv1", "f1", -5_000.0))
        ack = await obs.ack("f1")
        assert (ack.result, ack.applied_w, ack.rules) == ("clamped", 0.0, ["soc_floor"])
        assert sim.decode_point(704, "WSet") == 0

    _run(fleet, mosquitto, site, tmp_path, body)


def test_derating_and_ramp_clamp_the_setpoint(mosquitto: Broker, tmp_path: Path) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=16)
    site = _site(mosquitto, {"inv1": base}, inv1_extra={"ramp_w_per_s": 1_000.0})

    async def body(obs: Observer, collector: Collector, service: ControlService) -> None:
        collector.reading("inv1", 0.0, soc_pct=50.0, temp_c=80.0)  # halfway: derate 0.5
        await _until(lambda: service.live.derate("inv1", _now_ms()) == 0.5, "no telemetry")
        obs.send(_command("inv1", "d1", 8_000.0))
        first = await obs.ack("d1")  # first command: no previous setpoint, no ramp
        assert (first.applied_w, first.rules) == (5_000.0, ["derating"])
        obs.send(_command("inv1", "d2", -5_000.0))
        second = await obs.ack("d2")  # 10 kW away, at 1 kW/s: a small step only
        assert second.rules == ["ramp"]
        assert second.applied_w is not None and 0.0 < second.applied_w < 5_000.0

    _run(fleet, mosquitto, site, tmp_path, body)


def test_manual_dispatch_is_applied_once_and_overrides_automatic(
    mosquitto: Broker, tmp_path: Path
) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=17)
    sim = fleet.devices[0]
    site = _site(mosquitto, {"inv1": base})

    async def body(obs: Observer, collector: Collector, service: ControlService) -> None:
        collector.reading("inv1", 0.0, soc_pct=50.0)
        await _until(lambda: service.live.fresh("inv1", _now_ms()) is not None, "no telemetry")
        operator = Operator(service)
        first = await operator.manual_dispatch("inv1", -5_000.0, "tx-1", 60.0)
        assert (first.result, first.applied_w) == ("applied", -5_000.0)
        assert sim.decode_point(704, "WSet") == 5_000
        again = await operator.manual_dispatch("inv1", -5_000.0, "tx-1", 60.0)
        assert again == first  # the first answer, nothing written twice
        assert service.results["applied"] == 1

        obs.send(_command("inv1", "auto1", 2_000.0))
        refused = await obs.ack("auto1")
        assert refused.result == "rejected"
        assert refused.reason is not None and refused.reason.startswith("manual override")
        assert sim.decode_point(704, "WSet") == 5_000

        assert await operator.cancel_manual("inv1") is True
        obs.send(_command("inv1", "auto2", 2_000.0))
        assert (await obs.ack("auto2")).result == "applied"
        assert sim.decode_point(704, "WSet") == -2_000

    _run(fleet, mosquitto, site, tmp_path, body)


def test_watchdog_returns_to_the_configured_default(mosquitto: Broker, tmp_path: Path) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=18)
    sim = fleet.devices[0]
    site = _site(
        mosquitto,
        {"inv1": base},
        inv1_extra={"default_setpoint_w": 1_000.0},
    )
    site = site.model_copy(update={"control": site.control.model_copy(update={"watchdog_s": 1.0})})

    async def body(obs: Observer, collector: Collector, service: ControlService) -> None:
        collector.reading("inv1", 0.0, soc_pct=50.0)
        obs.send(_command("inv1", "w1", -3_000.0))
        assert (await obs.ack("w1")).result == "applied"
        await _until(lambda: sim.decode_point(704, "WSet") == -1_000, "watchdog default")
        assert service.watchdog_trips == 1

    _run(fleet, mosquitto, site, tmp_path, body)


def test_local_droop_is_programmed_by_the_control_service(
    mosquitto: Broker, tmp_path: Path
) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=19)
    sim = fleet.devices[0]
    site = _site(mosquitto, {"inv1": base}, inv1_extra={"droop": {"k_of": 0.04}})
    dispatch = site.dispatch.model_copy(update={"mode": "droop", "local_droop": True})
    site = site.model_copy(update={"dispatch": dispatch})

    async def body(obs: Observer, collector: Collector, service: ControlService) -> None:
        assert service.droop is not None
        await _until(lambda: sim.decode_point(711, "Ena") == 1, "711 not enabled")
        snapshot = service.droop.snapshot()["inv1"]
        await _until(
            lambda: (
                service.droop is not None
                and service.droop.snapshot()["inv1"]["status"] == "programmed"
            ),
            f"not programmed: {snapshot}",
        )
        view = Operator(service).asset_view("inv1")
        assert view is not None and view["local_droop"]["status"] == "programmed"

    _run(fleet, mosquitto, site, tmp_path, body)


def test_a_simulated_ground_fault_seen_by_the_real_collector_stops_the_inverter(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """Simulator trips (InvSt FAULT) -> the Modbus collector's telemetry -> latch -> 0 W."""
    base = free_port_block(2)
    fleet = InverterFleet(2, base, seed=20)
    site = _site(mosquitto, {"inv1": base, "inv2": base + 1})

    async def body(obs: Observer, collector: Collector, service: ControlService) -> None:
        publisher = AsyncMqttClient(mosquitto.url, f"test-collector-{time.time_ns()}")
        await publisher.start()
        stop = asyncio.Event()
        polling = asyncio.create_task(collect(site, publisher, stop))
        try:
            await _until(lambda: service.live.soc_pct("inv1", _now_ms()) is not None, "no poll")
            obs.send(_command("inv1", "t1", -4_000.0))
            obs.send(_command("inv2", "t2", -4_000.0))
            assert (await obs.ack("t1")).result == "applied"
            assert (await obs.ack("t2")).result == "applied"

            fleet.set_ground_fault(0, True)
            await _until(lambda: service.faults.latched("inv1") != [], "fault not latched")
            assert service.faults.describe("inv1") == "FAULT"
            await _until(lambda: fleet.devices[0].decode_point(704, "WSet") == 0, "no e-stop")
            assert service.faults.latched("inv2") == []  # the other one goes on
            assert fleet.devices[1].decode_point(704, "WSet") == 4_000
        finally:
            stop.set()
            await polling
            await publisher.stop()

    _run(fleet, mosquitto, site, tmp_path, body)


def test_duplicate_stale_and_expired_change_nothing_across_a_writer_restart(
    mosquitto: Broker, tmp_path: Path
) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=23)
    sim = fleet.devices[0]
    site = _site(mosquitto, {"inv1": base})
    first = _command("inv1", "r-new", -3_000.0)
    older = first.model_copy(
        update={"command_id": "r-old", "issued_ms": first.issued_ms - 1_000, "setpoint_w": 9e3}
    )
    expired = first.model_copy(
        update={"command_id": "r-exp", "valid_until_ms": first.issued_ms - 1, "setpoint_w": 8e3}
    )

    async def before(obs: Observer, collector: Collector, service: ControlService) -> None:
        collector.reading("inv1", 0.0, soc_pct=50.0)
        await _until(lambda: service.live.fresh("inv1", _now_ms()) is not None, "no reading")
        obs.send(first)
        assert (await obs.ack("r-new")).result == "applied"
        assert sim.decode_point(704, "WSet") == 3_000

    async def after(obs: Observer, collector: Collector, service: ControlService) -> None:
        collector.reading("inv1", 0.0, soc_pct=50.0)
        await _until(lambda: service.live.fresh("inv1", _now_ms()) is not None, "no reading")
        for command in (first, older, expired):
            obs.send(command)
        results = [(await obs.ack(c.command_id)).result for c in (first, older, expired)]
        assert results == ["duplicate", "stale", "expired"]
        assert sim.decode_point(704, "WSet") == 3_000  # nothing moved
        assert service.results["applied"] == 0

    _run(fleet, mosquitto, site, tmp_path, before)
    _run(fleet, mosquitto, site, tmp_path, after)
