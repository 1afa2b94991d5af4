"""The control service end to end: real Mosquitto, simulated SunSpec inverters, acks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from control.ledger import Ledger
from control.service import ControlService, revert_s_of
from gridflex.broker import Broker
from gridflex.config import SiteConfig, parse_site
from gridflex.contract import (
    DeadLetter,
    DispatchAck,
    DispatchCommand,
    command_topic,
    deadletter_topic,
    parse_payload,
)
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.net import free_port, free_port_block
from simulators.inverter import InverterFleet
from tests.mqtt_helpers import Subscriber

pytestmark = pytest.mark.integration

SITE = "ctl1"
ROOT = Path(__file__).resolve().parents[2]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _site(broker: Broker, inverter_ports: dict[str, int]) -> SiteConfig:
    assets: list[dict[str, Any]] = [
        {
            "id": asset_id,
            "kind": "inverter",
            "host": "127.0.0.1",
            "port": port,
            "max_charge_w": 10_000.0,
            "max_discharge_w": 10_000.0,
            "soc_min_pct": 0.0,
            "soc_max_pct": 100.0,
        }
        for asset_id, port in inverter_ports.items()
    ]
    assets.append({"id": "ev1", "kind": "evse", "max_charge_w": 11_000.0})
    return parse_site(
        {
            "site": {"id": SITE},
            "mqtt": {"url": broker.url},
            "modbus": {"timeout_s": 1.0},
            "ocpp": {"response_timeout_s": 0.5},  # no CSMS runs here: fail in 3 s
            "assets": assets,
        }
    )


def _command(asset: str, command_id: str, setpoint_w: float) -> DispatchCommand:
    now = _now_ms()
    return DispatchCommand(
        site=SITE,
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


class Observer:
    """A test client: publishes commands, collects acks and dead letters."""

    def __init__(self, broker: Broker) -> None:
        self.mqtt = AsyncMqttClient(
            broker.url, f"test-control-{time.time_ns()}", clean_session=True
        )
        self.acks: dict[str, list[DispatchAck]] = {}
        self.dead: list[DeadLetter] = []

    async def start(self) -> None:
        await self.mqtt.start()
        assert await self.mqtt.wait_connected(10.0)
        self.mqtt.subscribe(f"gridflex/v1/{SITE}/dispatch/+/ack", self._on_ack)
        self.mqtt.subscribe(deadletter_topic("control"), self._on_dead)
        await asyncio.sleep(0.3)  # the SUBACKs

    def _on_ack(self, _topic: str, payload: bytes) -> None:
        ack = parse_payload(payload)
        assert isinstance(ack, DispatchAck)
        self.acks.setdefault(ack.command_id, []).append(ack)

    def _on_dead(self, _topic: str, payload: bytes) -> None:
        letter = parse_payload(payload)
        assert isinstance(letter, DeadLetter)
        self.dead.append(letter)

    def send(self, command: DispatchCommand) -> None:
        self.mqtt.publish(command_topic(SITE, command.asset), command.to_json())

    async def ack(self, command_id: str, count: int = 1, timeout_s: float = 10.0) -> DispatchAck:
        deadline = time.monotonic() + timeout_s
        while len(self.acks.get(command_id, [])) < count:
            assert time.monotonic() < deadline, f"no ack {count} for {command_id}"
            await asyncio.sleep(0.02)
        return self.acks[command_id][count - 1]


async def _with_service(
    broker: Broker,
    site: SiteConfig,
    ledger_path: Path,
    body: Any,
    watchdog_s: float | None = None,
) -> None:
    observer = Observer(broker)
    await observer.start()
    mqtt = AsyncMqttClient(broker.url, f"gridflex-control-{SITE}-{time.time_ns()}")
    with Ledger(ledger_path) as ledger:
        service = ControlService(site, ledger, mqtt, watchdog_s=watchdog_s)
        await mqtt.start()
        assert await mqtt.wait_connected(10.0)
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        await asyncio.sleep(0.3)  # the SUBACK
        try:
            await body(observer)
        finally:
            stop.set()
            await runner
            await mqtt.stop()
            await observer.mqtt.stop()


def _run(
    fleet: InverterFleet,
    broker: Broker,
    site: SiteConfig,
    tmp_path: Path,
    body: Any,
    *,
    watchdog_s: float | None = None,
) -> None:
    """Serve the simulated fleet and run ``body`` against a running service."""

    async def scenario() -> None:
        async with fleet:
            await _with_service(
                broker, site, tmp_path / "ledger.sqlite3", body, watchdog_s=watchdog_s
            )

    asyncio.run(scenario())


def test_apply_duplicate_dead_letter_and_evse(mosquitto: Broker, tmp_path: Path) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=3)
    sim = fleet.devices[0]
    site = _site(mosquitto, {"inv1": base})

    async def body(obs: Observer) -> None:
        obs.send(_command("inv1", "c1", 3_000.0))
        first = await obs.ack("c1")
        assert (first.result, first.applied_w, first.readback_w) == ("applied", 3_000.0, 3_000.0)
        # SunSpec WSet is + for injection: a 3 kW charge is -3000
        assert sim.decode_point(704, "WSet") == -3_000
        assert sim.decode_point(704, "WSetRvrtTms") == revert_s_of(site) == 10

        obs.send(_command("inv1", "c1", 3_000.0))
        again = await obs.ack("c1", count=2)
        assert (again.result, again.applied_w) == ("duplicate", 3_000.0)

        obs.mqtt.publish(command_topic(SITE, "inv1"), b"{not json")
        obs.mqtt.publish(command_topic(SITE, "nobody"), _command("nobody", "x", 1.0).to_json())
        obs.mqtt.publish(command_topic(SITE, "inv1"), b"[" * 20_000 + b"]" * 20_000)
        obs.send(_command("inv1", "c2", -2_000.0))  # discharge: the SoC comes from 713
        second = await obs.ack("c2")
        assert (second.result, second.applied_w) == ("applied", -2_000.0)
        assert sim.decode_point(704, "WSet") == 2_000
        deadline = time.monotonic() + 5
        while len(obs.dead) < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert obs.dead[0].component == "control" and obs.dead[0].site == SITE
        assert obs.dead[0].reason.startswith("not JSON")
        assert obs.dead[0].payload == "{not json"
        assert "unknown asset 'nobody'" in obs.dead[1].reason
        assert obs.dead[2].reason.startswith("not JSON")  # 20 kB of [[[…]]]: the service lives

        obs.send(_command("ev1", "e1", 5_000.0))  # an EVSE: through the CSMS, which is absent
        ev = await obs.ack("e1")
        assert (ev.result, ev.applied_w) == ("failed", None)
        assert ev.reason is not None and "no answer from the CSMS" in ev.reason

    _run(fleet, mosquitto, site, tmp_path, body)


def test_a_device_down_fails_while_the_other_applies(mosquitto: Broker, tmp_path: Path) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=5)
    sim = fleet.devices[0]
    dead_port = free_port()  # nothing listens there
    site = _site(mosquitto, {"up": base, "down": dead_port})

    async def body(obs: Observer) -> None:
        obs.send(_command("down", "d1", 1_000.0))
        obs.send(_command("up", "u1", 4_000.0))
        up = await obs.ack("u1")
        down = await obs.ack("d1")
        assert up.result == "applied" and sim.decode_point(704, "WSet") == -4_000
        assert down.result == "failed"
        assert down.reason is not None and down.reason.startswith("connect:")
        # not recorded: the same id is tried again (and fails again) on redelivery
        obs.send(_command("down", "d1", 1_000.0))
        assert (await obs.ack("d1", count=2)).result == "failed"

    _run(fleet, mosquitto, site, tmp_path, body)


def test_watchdog_returns_a_silent_asset_to_0_w(mosquitto: Broker, tmp_path: Path) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=7)
    sim = fleet.devices[0]
    site = _site(mosquitto, {"inv1": base})

    async def body(obs: Observer) -> None:
        obs.send(_command("inv1", "w1", -3_000.0))
        assert (await obs.ack("w1")).result == "applied"
        assert sim.decode_point(704, "WSet") == 3_000  # SunSpec sign: + injection
        # no further command: after the watchdog (1 s here; the device's own timer is 10 s)
        deadline = time.monotonic() + 5
        while sim.decode_point(704, "WSet") != 0:
            assert time.monotonic() < deadline, "the watchdog did not write 0 W"
            await asyncio.sleep(0.1)

    _run(fleet, mosquitto, site, tmp_path, body, watchdog_s=1.0)


@pytest.mark.slow
def test_the_control_command_acks_and_exits_0_on_sigterm(mosquitto: Broker, tmp_path: Path) -> None:
    site = f"c{uuid.uuid4().hex[:8]}"
    path = tmp_path / "site.toml"
    path.write_text(
        f'[site]\nid = "{site}"\n\n[mqtt]\nurl = "{mosquitto.url}"\n\n'
        "[ocpp]\nresponse_timeout_s = 0.5\n\n"
        '[[assets]]\nid = "ev1"\nkind = "evse"\nmax_charge_w = 11000\n',
        encoding="utf-8",
    )
    ledger = tmp_path / "ledger" / "ledger.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "gridflex.cli", "control", "--site", str(path)]
    args += ["--ledger", str(ledger)]
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with Subscriber(mosquitto.url, f"gridflex/v1/{site}/dispatch/+/ack") as sub:
            command = _command("ev1", "e1", 2_000.0).model_copy(update={"site": site})
            deadline = time.monotonic() + 20
            # resend until the service has subscribed (its session starts with it)
            while not sub.wait_for(bool, timeout_s=0.5):
                assert time.monotonic() < deadline, "no ack from gridflex control"
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                sub.client.publish(command_topic(site, "ev1"), command.to_json())
            ack = sub.json_on(lambda t: t.endswith("/ev1/ack"))[0]
            assert ack["result"] == "failed"  # no CSMS runs: no answer to the request
            assert "no answer from the CSMS" in ack["reason"]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert rc == 0
    assert ledger.exists()
