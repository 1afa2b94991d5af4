"""The REST API over the real control service: real uvicorn, Mosquitto and Modbus TCP.

A valid charge profile changes what the simulated inverter may do; a manual command goes
through the ledger and clamp once per transaction; a latched fault is cleared over HTTP.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest

from control.api import create_app, serve_api
from control.faults import FaultLatch
from control.ledger import Ledger
from control.operator import Operator
from control.profiles import ProfileStore
from control.service import ControlService
from gridflex.broker import Broker
from gridflex.config import ApiConfig
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.net import free_port, free_port_block
from simulators.inverter import InverterFleet
from tests.control.test_service import SITE, Observer, _command
from tests.control.test_service_safety import Collector, _site, _until

pytestmark = pytest.mark.integration

TOKEN = "live-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def test_the_api_drives_the_real_service(mosquitto: Broker, tmp_path: Path) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=31)
    sim = fleet.devices[0]
    site = _site(mosquitto, {"inv1": base})

    async def scenario() -> None:
        async with fleet:
            obs = Observer(mosquitto)
            await obs.start()
            collector = Collector(obs.mqtt)
            mqtt = AsyncMqttClient(mosquitto.url, f"gridflex-control-{SITE}-{time.time_ns()}")
            ledger_path = tmp_path / "ledger.sqlite3"
            with (
                Ledger(ledger_path) as ledger,
                FaultLatch(ledger_path) as faults,
                ProfileStore(tmp_path / "profiles.sqlite3") as profiles,
            ):
                service = ControlService(site, ledger, mqtt, faults=faults, profiles=profiles)
                await mqtt.start()
                assert await mqtt.wait_connected(10.0)
                stop = asyncio.Event()
                runner = asyncio.create_task(service.run(stop))
                app = create_app(Operator(service), profiles, TOKEN)
                server = serve_api(app, ApiConfig(listen=f"127.0.0.1:{free_port()}"))
                assert await server.wait_started()
                try:
                    async with httpx2.AsyncClient(base_url=server.url, headers=AUTH) as http:
                        await _exercise(http, obs, collector, service, sim)
                finally:
                    await server.stop()
                    stop.set()
                    await runner
                    await mqtt.stop()
                    await obs.mqtt.stop()

    asyncio.run(scenario())


async def _exercise(
    http: httpx2.AsyncClient, obs: Observer, collector: Collector, service: Any, sim: Any
) -> None:
    collector.reading("inv1", 0.0, soc_pct=50.0)
    await _until(lambda: service.live.fresh("inv1", time.time_ns() // 1_000_000), "no reading")
    health = await http.get("/api/v1/health")
    assert health.status_code == 200 and health.json()["mqtt_connected"] is True

    # a profile limits discharge to 2 kW: a 5 kW discharge is clamped to it
    now = time.time_ns() // 1_000_000
    body: dict[str, Any] = {
        "asset": "inv1",
        "profile_id": "depot-evening",
        "valid_from": _iso(now - 60_000),
        "valid_to": _iso(now + 3_600_000),
        "max_charge_kw": 10.0,
        "max_discharge_kw": 2.0,
        "soc_min_pct": 20.0,
        "soc_max_pct": 90.0,
    }
    created = await http.post("/api/v1/charge-profile", json=body)
    assert created.status_code == 201, created.text
    obs.send(_command("inv1", "p1", -5_000.0))
    ack = await obs.ack("p1")
    assert (ack.result, ack.applied_w, ack.rules) == ("clamped", -2_000.0, ["profile"])
    assert sim.decode_point(704, "WSet") == 2_000  # SunSpec sign: + injection
    view = (await http.get("/api/v1/assets/inv1")).json()
    assert view["limits"]["profile"]["profile_ids"] == ["depot-evening"]

    # a tighter profile takes effect at once, without a command; removing it undoes that
    tighter = {**body, "profile_id": "grid-alert", "max_discharge_kw": 1.0}
    assert (await http.post("/api/v1/charge-profile", json=tighter)).status_code == 201
    await _until(lambda: sim.decode_point(704, "WSet") == 1_000, "the new limit not applied")
    assert (await http.delete("/api/v1/charge-profile/grid-alert")).status_code == 200
    await _until(lambda: sim.decode_point(704, "WSet") == 2_000, "the old limit not back")

    # a manual "discharge 1.5 kW", twice: applied once, the same answer
    order = {"asset": "inv1", "setpoint_w": -1_500.0, "transaction_id": "T-42", "valid_for_s": 60}
    first = await http.post("/api/v1/dispatch", json=order)
    again = await http.post("/api/v1/dispatch", json=order)
    assert first.status_code == again.status_code == 200, first.text
    assert first.json() == again.json()
    assert first.json()["result"] == "applied", first.text
    assert sim.decode_point(704, "WSet") == 1_500
    assert service.results["applied"] == 1

    # a ground fault: 0 W at once; cleared over HTTP, then commands apply again
    collector.status("inv1", online=True, state="faulted", faults=["Error 0x04"])
    await _until(lambda: sim.decode_point(704, "WSet") == 0, "no emergency stop")
    view = (await http.get("/api/v1/assets/inv1")).json()
    assert view["faults"] == ["Error 0x04"]
    cleared = await http.post("/api/v1/assets/inv1/clear-fault")
    assert cleared.status_code == 200 and "Error 0x04" in cleared.text
    assert (await http.delete("/api/v1/dispatch/inv1")).status_code == 200
    collector.status("inv1", online=True, state="online")
    obs.send(_command("inv1", "p2", -1_000.0))
    assert (await obs.ack("p2")).result == "applied"
    assert sim.decode_point(704, "WSet") == 1_000
