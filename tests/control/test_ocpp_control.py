"""Commands to EVSEs end to end: ControlService -> MQTT -> CSMS -> OCPP -> simulated stations.

Everything real on loopback: Mosquitto, the CSMS with its request server on its own MQTT
client, simulated stations over WebSocket, the control service with its ledger.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from collectors.ocpp.csms import Csms, CsmsSettings
from collectors.ocpp.requests import RequestServer
from control.ledger import Ledger
from control.ocpp import CsmsError, OcppDevice
from control.ocpp_plan import profile_id
from control.service import ControlService
from gridflex.broker import Broker
from gridflex.config import DroopConfig, SiteConfig, parse_site
from gridflex.contract import (
    CsmsRequest,
    CsmsResult,
    DispatchAck,
    DispatchCommand,
    command_topic,
    csms_request_topic,
    parse_payload,
)
from gridflex.mqtt_asyncio import AsyncMqttClient
from pipelines.dispatch import DroopParams, droop_delta_w
from simulators.charger.fleet import EvseSpec, Faults, StationSpec
from simulators.charger.station import SimStation
from simulators.ev import CarSpec

pytestmark = pytest.mark.integration

PASSWORD = "station-password-0123"
V2X_CAR = CarSpec(max_charge_w=11_000, max_discharge_w=7_000, v2x=True, initial_soc_pct=50)
LATE_CAR = replace(V2X_CAR, arrival_s=3_600.0)  # no transaction until the test lets it in


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SteppedFrequency:
    """A grid frequency the test steps by hand (a ``FrequencySource``)."""

    def __init__(self, value_hz: float = 50.0) -> None:
        self.value_hz = value_hz

    def freq_hz(self, _t_s: float) -> float:
        return self.value_hz


class Rig:
    """A site of EVSE assets, its CSMS, its stations and ``gridflex control`` in one loop."""

    def __init__(
        self,
        broker: Broker,
        tmp_path: Path,
        specs: list[StationSpec],
        *,
        offline: tuple[str, ...] = (),
        frequency: SteppedFrequency | None = None,
        station_max_w: float | None = None,
        soc_min_pct: float = 0.0,
    ) -> None:
        self.broker = broker
        self.site_id = f"o{uuid.uuid4().hex[:8]}"
        self.specs = specs
        self.frequency = frequency
        assets: list[dict[str, Any]] = []
        for spec in [*specs, *(StationSpec.single(s, PASSWORD, "2.1", V2X_CAR) for s in offline)]:
            for evse in spec.evses:
                several = len(spec.evses) > 1
                assets.append(
                    {
                        "id": f"{spec.station_id}-{evse.evse_id}" if several else spec.station_id,
                        "kind": "evse",
                        "station_id": spec.station_id,
                        "evse_id": evse.evse_id,
                        "password": PASSWORD,
                        "max_charge_w": 11_000.0,
                        "max_discharge_w": 10_000.0,
                        "soc_min_pct": soc_min_pct,
                        "soc_max_pct": 100.0,
                    }
                )
                if station_max_w is not None:
                    assets[-1]["station_max_w"] = station_max_w
        self.site: SiteConfig = parse_site(
            {
                "site": {"id": self.site_id},
                "mqtt": {"url": broker.url},
                "ocpp": {"port": 0, "meter_interval_s": 0.2, "response_timeout_s": 1.0},
                "assets": assets,
            }
        )
        self.ledger_path = tmp_path / "ledger.sqlite3"
        self.acks: dict[str, list[DispatchAck]] = {}
        self.results: list[CsmsResult] = []
        self.stations: list[SimStation] = []

    async def run(self, body: Callable[[Rig], Awaitable[None]]) -> None:
        site = self.site
        csms_mqtt = AsyncMqttClient(
            self.broker.url, f"test-csms-{self.site_id}", clean_session=True
        )
        await csms_mqtt.start()
        assert await csms_mqtt.wait_connected(10.0)
        self.csms = Csms(CsmsSettings.from_site(site), csms_mqtt)
        self.requests = RequestServer(self.csms, csms_mqtt)
        await self.csms.start()
        self.requests.start()
        url = f"ws://127.0.0.1:{self.csms.port}/ocpp"
        self.stations = [SimStation(s, url, frequency=self.frequency) for s in self.specs]
        stop_stations = asyncio.Event()
        tasks = [asyncio.create_task(s.run(stop_stations)) for s in self.stations]

        self.observer = AsyncMqttClient(
            self.broker.url, f"test-obs-{self.site_id}", clean_session=True
        )
        await self.observer.start()
        assert await self.observer.wait_connected(10.0)
        self.observer.subscribe(f"gridflex/v1/{self.site_id}/dispatch/+/ack", self._on_ack)
        self.observer.subscribe(f"gridflex/v1/{self.site_id}/csms/+/result", self._on_result)
        mqtt = AsyncMqttClient(self.broker.url, f"test-control-{self.site_id}", clean_session=True)
        await mqtt.start()
        assert await mqtt.wait_connected(10.0)
        stop = asyncio.Event()
        with Ledger(self.ledger_path) as ledger:
            self.service = ControlService(site, ledger, mqtt)
            runner = asyncio.create_task(self.service.run(stop))
            await asyncio.sleep(0.3)  # the SUBACKs
            try:
                await body(self)
            finally:
                stop.set()
                await runner
                stop_stations.set()
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
                await self.requests.stop()
                await self.csms.stop()
                for client in (mqtt, self.observer, csms_mqtt):
                    await client.stop(flush_timeout_s=1.0)

    def _on_ack(self, _topic: str, payload: bytes) -> None:
        ack = parse_payload(payload)
        assert isinstance(ack, DispatchAck)
        self.acks.setdefault(ack.command_id, []).append(ack)

    def _on_result(self, _topic: str, payload: bytes) -> None:
        result = parse_payload(payload)
        assert isinstance(result, CsmsResult)
        self.results.append(result)

    def command(self, asset: str, command_id: str, setpoint_w: float) -> DispatchCommand:
        now = _now_ms()
        command = DispatchCommand(
            site=self.site_id,
            asset=asset,
            ts_ms=now - 100,
            seq=1,
            command_id=command_id,
            issued_ms=now,
            setpoint_w=setpoint_w,
            valid_until_ms=now + 30_000,
            mode="droop",
            reason="test",
        )
        self.observer.publish(command_topic(self.site_id, asset), command.to_json())
        return command

    async def ack(self, command_id: str, count: int = 1, timeout_s: float = 20.0) -> DispatchAck:
        await until(lambda: len(self.acks.get(command_id, [])) >= count, timeout_s)
        return self.acks[command_id][count - 1]

    async def charging(self, *assets: str, timeout_s: float = 20.0) -> None:
        """Wait until each EVSE runs a transaction with the car's needs and reports power."""

        def ready(asset: str) -> bool:
            evse = self.csms.evse(asset)
            return (
                evse is not None
                and evse.transaction_id is not None
                and evse.needs is not None
                and evse.station.meter_interval_s == 0.2
                and evse.last_power_w is not None
            )

        await until(lambda: all(ready(a) for a in assets), timeout_s)

    async def connected(self, *stations: str, timeout_s: float = 20.0) -> None:
        """Wait until the stations are connected with their sampling set."""

        def ready(station: str) -> bool:
            state = self.csms.station(station)
            return state is not None and state.connected and state.meter_interval_s == 0.2

        await until(lambda: all(ready(s) for s in stations), timeout_s)

    def power_w(self, asset: str) -> float | None:
        evse = self.csms.evse(asset)
        return None if evse is None else evse.last_power_w


async def until(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def station(station_id: str, *cars: CarSpec, version: str = "2.1") -> StationSpec:
    evses = tuple(EvseSpec(car, i, 22_000, 11_000) for i, car in enumerate(cars, start=1))
    return StationSpec(station_id, PASSWORD, "2.1" if version == "2.1" else "2.0.1", evses)


def test_evse_commands_apply_with_and_without_a_transaction(
    mosquitto: Broker, tmp_path: Path
) -> None:
    rig = Rig(mosquitto, tmp_path, [station("cs-tx", V2X_CAR), station("cs-idle", LATE_CAR)])

    async def body(rig: Rig) -> None:
        await rig.charging("cs-tx")
        await rig.connected("cs-idle")
        # SoC from the EVSE's telemetry: with it, a V2X discharge passes the clamp
        await until(lambda: rig.service.live.soc_pct("cs-tx", _now_ms()) is not None, 10)

        rig.command("cs-tx", "tx-1", -4_000.0)
        ack = await rig.ack("tx-1")
        assert (ack.result, ack.applied_w, ack.readback_w) == ("applied", -4_000.0, -4_000.0)
        assert ack.measured_w == -4_000.0  # the station's next meter value after its answer
        assert ack.latency_from_issued_ms is not None and ack.latency_from_issued_ms >= 0
        answer = next(r for r in rig.results if r.request_id == "tx-1" and r.phase == "answer")
        assert (answer.purpose, answer.operation_mode) == ("TxProfile", "CentralSetpoint")

        rig.command("cs-idle", "idle-1", 5_000.0)
        ack = await rig.ack("idle-1")
        assert (ack.result, ack.applied_w, ack.readback_w) == ("applied", 5_000.0, 5_000.0)
        assert ack.measured_w == 0.0  # no car yet: the idle meter value
        answer = next(r for r in rig.results if r.request_id == "idle-1" and r.phase == "answer")
        assert (answer.purpose, answer.operation_mode) == ("TxDefaultProfile", "ChargingOnly")
        idle = rig.stations[1].evses[1]
        assert idle.default_profile is not None
        assert idle.default_profile.profile_id == profile_id("TxDefaultProfile", 1)

        # the car arrives: its transaction charges at the default profile's 5 kW, not 11 kW
        idle.spec = replace(idle.spec, car=replace(LATE_CAR, arrival_s=0.0))
        await rig.charging("cs-idle")
        await until(lambda: rig.power_w("cs-idle") == 5_000.0, 10)

    asyncio.run(rig.run(body))


def test_two_evses_of_one_station_get_independent_setpoints(
    mosquitto: Broker, tmp_path: Path
) -> None:
    rig = Rig(mosquitto, tmp_path, [station("cs-7", V2X_CAR, V2X_CAR)])

    async def body(rig: Rig) -> None:
        await rig.charging("cs-7-1", "cs-7-2")
        rig.command("cs-7-1", "a", 3_000.0)
        rig.command("cs-7-2", "b", 6_000.0)
        first, second = await rig.ack("a"), await rig.ack("b")
        assert (first.result, first.measured_w) == ("applied", 3_000.0)
        assert (second.result, second.measured_w) == ("applied", 6_000.0)
        evses = rig.stations[0].evses
        assert {n: e.tx_profile.control.setpoint_w for n, e in evses.items() if e.tx_profile} == {
            1: 3_000.0,
            2: 6_000.0,
        }
        await until(
            lambda: (rig.power_w("cs-7-1"), rig.power_w("cs-7-2")) == (3_000.0, 6_000.0), 10
        )

    asyncio.run(rig.run(body))


def test_a_duplicate_is_executed_once(mosquitto: Broker, tmp_path: Path) -> None:
    rig = Rig(mosquitto, tmp_path, [station("cs-d", V2X_CAR)])

    async def body(rig: Rig) -> None:
        await rig.charging("cs-d")
        sim = rig.stations[0]
        before = sim.counters.profiles_received
        rig.command("cs-d", "d-1", 2_000.0)
        assert (await rig.ack("d-1")).result == "applied"
        rig.command("cs-d", "d-1", 2_000.0)  # the same command again: the ledger's duplicate
        assert (await rig.ack("d-1", count=2)).result == "duplicate"
        assert sim.counters.profiles_received == before + 1

        # the same request to the CSMS twice (a redelivery): executed once, answered twice
        now = _now_ms()
        request = CsmsRequest(
            site=rig.site_id,
            asset="cs-d",
            ts_ms=now,
            request_id="r-1",
            kind="setpoint",
            power_w=1_000.0,
            valid_until_ms=now + 10_000,
        )
        topic = csms_request_topic(rig.site_id, "cs-d")
        for _ in range(2):
            rig.observer.publish(topic, request.to_json())
        await until(
            lambda: sum(r.request_id == "r-1" and r.phase == "readback" for r in rig.results) == 2,
            10,
        )
        assert sim.counters.profiles_received == before + 2
        answers = [r for r in rig.results if r.request_id == "r-1" and r.phase == "answer"]
        assert len(answers) == 2 and answers[0] == answers[1]
        assert rig.requests.executed == 2 and rig.requests.repeated == 1

        # past valid_until_ms: refused, not sent
        stale = request.model_copy(update={"request_id": "r-2", "valid_until_ms": now - 1})
        rig.observer.publish(topic, stale.to_json())
        await until(lambda: any(r.request_id == "r-2" for r in rig.results), 10)
        refused = next(r for r in rig.results if r.request_id == "r-2")
        assert refused.status == "refused" and (refused.reason or "").startswith("expired")
        assert sim.counters.profiles_received == before + 2

    asyncio.run(rig.run(body))


def test_an_offline_station_fails_and_the_others_go_on(mosquitto: Broker, tmp_path: Path) -> None:
    rig = Rig(mosquitto, tmp_path, [station("cs-on", V2X_CAR)], offline=("cs-off",))

    async def body(rig: Rig) -> None:
        await rig.charging("cs-on")
        rig.command("cs-off", "off-1", 2_000.0)
        rig.command("cs-on", "on-1", 2_000.0)
        off, on = await rig.ack("off-1"), await rig.ack("on-1")
        assert on.result == "applied"
        assert off.result == "failed"
        assert off.reason is not None and "offline: station not connected" in off.reason
        # not recorded: the same command is tried again (and fails again)
        rig.command("cs-off", "off-1", 2_000.0)
        assert (await rig.ack("off-1", count=2)).result == "failed"

    asyncio.run(rig.run(body))


def test_local_frequency_profile_follows_a_frequency_step_without_commands(
    mosquitto: Broker, tmp_path: Path
) -> None:
    grid = SteppedFrequency(50.0)
    rig = Rig(
        mosquitto,
        tmp_path,
        [station("cs-f", V2X_CAR), station("cs-old", V2X_CAR, version="2.0.1")],
        frequency=grid,
    )

    async def body(rig: Rig) -> None:
        await rig.charging("cs-f", "cs-old")
        device = rig.service.devices["cs-f"]
        assert isinstance(device, OcppDevice)
        result = await device.program_droop(DroopConfig(), baseline_w=0.0)
        assert (result.status, result.operation_mode) == ("accepted", "LocalFrequency")
        await until(lambda: rig.power_w("cs-f") == 0.0, 10)  # 50 Hz: inside the dead band

        grid.value_hz = 49.5  # under-frequency: the station discharges on its own
        expected = droop_delta_w(
            49.5, 50.0, DroopParams(), rated_charge_w=11_000, rated_discharge_w=10_000
        )
        assert expected == pytest.approx(-1_856.0)
        await until(lambda: rig.power_w("cs-f") == pytest.approx(expected, abs=0.01), 10)
        grid.value_hz = 50.5  # over-frequency: it charges
        expected = droop_delta_w(
            50.5, 50.0, DroopParams(), rated_charge_w=11_000, rated_discharge_w=10_000
        )
        await until(lambda: rig.power_w("cs-f") == pytest.approx(expected, abs=0.01), 10)
        assert rig.acks == {}  # no command was sent

        old = rig.service.devices["cs-old"]
        assert isinstance(old, OcppDevice)
        with pytest.raises(CsmsError, match=r"refused: OCPP 2\.0\.1 has no LocalFrequency"):
            await old.program_droop(DroopConfig())

    asyncio.run(rig.run(body))


def test_the_station_wide_limit_is_shared_by_its_evses(mosquitto: Broker, tmp_path: Path) -> None:
    rig = Rig(mosquitto, tmp_path, [station("cs-m", V2X_CAR, V2X_CAR)], station_max_w=8_000)

    async def body(rig: Rig) -> None:
        await rig.charging("cs-m-1", "cs-m-2")
        # both cars want 11 kW; the ChargingStationMaxProfile sent after boot caps the sum
        await until(lambda: (rig.power_w("cs-m-1"), rig.power_w("cs-m-2")) == (4_000, 4_000), 10)
        station_max = rig.stations[0].station_max
        assert station_max is not None and station_max.control.limit_w == 8_000
        assert station_max.profile_id == profile_id("ChargingStationMaxProfile", 0)

    asyncio.run(rig.run(body))


def test_a_car_at_its_soc_floor_is_not_discharged(mosquitto: Broker, tmp_path: Path) -> None:
    low_car = replace(V2X_CAR, initial_soc_pct=15)
    rig = Rig(mosquitto, tmp_path, [station("cs-low", low_car)], soc_min_pct=20.0)

    async def body(rig: Rig) -> None:
        await rig.charging("cs-low")
        await until(lambda: rig.service.live.soc_pct("cs-low", _now_ms()) is not None, 20)
        rig.command("cs-low", "low-1", -5_000.0)
        ack = await rig.ack("low-1")
        assert (ack.result, ack.applied_w, ack.rules) == ("clamped", 0.0, ["soc_floor"])
        rig.command("cs-low", "low-2", 3_000.0)  # charging is fine
        assert (await rig.ack("low-2")).result == "applied"

    asyncio.run(rig.run(body))


def test_a_station_ground_fault_latches_and_stops_the_evse(
    mosquitto: Broker, tmp_path: Path
) -> None:
    faulty = replace(station("cs-gf", V2X_CAR), faults=Faults(ground_fault_after_s=3.0))
    rig = Rig(mosquitto, tmp_path, [faulty, station("cs-ok", V2X_CAR)])

    async def body(rig: Rig) -> None:
        await rig.charging("cs-ok")
        # the connector goes Faulted and the station names the fault (techCode)
        await until(
            lambda: "GroundFault" in [f.code for f in rig.service.faults.latched("cs-gf")], 30
        )
        rig.command("cs-gf", "gf-1", 5_000.0)
        held = await rig.ack("gf-1")
        assert (held.applied_w, held.rules) == (0.0, ["fault"])
        assert rig.service.faults.latched("cs-ok") == []  # the other station goes on
        rig.command("cs-ok", "ok-1", 4_000.0)
        assert (await rig.ack("ok-1")).result == "applied"

    asyncio.run(rig.run(body))
