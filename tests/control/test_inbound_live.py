"""What control reads besides commands, over a real Mosquitto: refused inputs are dead-lettered.

Statuses, CSMS results and presences, and readings that control cannot parse or that are
outside the contract go to ``gridflex/v1/deadletter/control`` with their reason, are counted
by kind in control's metrics, and change nothing else: no fault is latched, the CSMS's
presence stays as it was, and the next command is applied as usual.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from control.metrics import families
from control.service import ControlService
from gridflex.broker import Broker
from gridflex.config import SiteConfig, parse_site
from gridflex.contract import csms_result_topic, status_topic, telemetry_topic
from gridflex.net import free_port_block
from simulators.inverter import InverterFleet
from tests.control.test_service import SITE, Observer, _command
from tests.control.test_service_safety import Collector, _now_ms, _run, _until

pytestmark = pytest.mark.integration


def _site(broker: Broker, port: int) -> SiteConfig:
    return parse_site(
        {
            "site": {"id": SITE},
            "mqtt": {"url": broker.url},
            "modbus": {"timeout_s": 1.0},
            "assets": [
                {"id": "inv1", "kind": "inverter", "host": "127.0.0.1", "port": port,
                 "max_charge_w": 10_000.0, "max_discharge_w": 10_000.0},
                {"id": "ev1", "kind": "evse", "max_charge_w": 11_000.0},
            ],
        }
    )  # fmt: skip


def _result(**fields: Any) -> bytes:
    body = {"schema": "csms-result/1", "site": SITE, "asset": "ev1", "ts_ms": _now_ms(),
            "request_id": "r-1", "kind": "setpoint", "phase": "answer", "status": "accepted",
            **fields}  # fmt: skip
    return json.dumps(body).encode()


def test_refused_statuses_results_presences_and_readings_are_dead_lettered_and_change_nothing(
    mosquitto: Broker, tmp_path: Path
) -> None:
    base = free_port_block(1)
    fleet = InverterFleet(1, base, seed=41)
    sim = fleet.devices[0]
    site = _site(mosquitto, base)
    presence = f"gridflex/v1/{SITE}/collector/ocpp/status"
    sent = {
        # (topic, payload): the dead letter's expected reason kind
        (status_topic(SITE, "inverter", "inv1"), b"{not json"): "malformed",
        (status_topic(SITE, "inverter", "inv1"), _result()): "wrong_schema",
        (
            status_topic(SITE, "inverter", "ghost"),
            json.dumps(
                {
                    "schema": "status/1",
                    "site": SITE,
                    "asset": "ghost",
                    "kind": "inverter",
                    "ts_ms": 1,
                    "online": False,
                    "state": "faulted",
                    "faults": ["Error 0x04"],
                }
            ).encode(),
        ): "unknown_asset",
        (csms_result_topic(SITE, "ev1"), b"\xff\xfe garbage"): "malformed",
        (csms_result_topic(SITE, "ev1"), _result(site="elsewhere")): "wrong_site",
        (csms_result_topic(SITE, "ev1"), _result(asset="inv1")): "topic_mismatch",
        (presence, b'{"component": "ocpp", "online": false}'): "malformed",
    }

    async def body(obs: Observer, collector: Collector, service: ControlService) -> None:
        service.csms.csms_online = True
        for topic, payload in sent:
            obs.mqtt.publish(topic, payload, qos=1)
        await _until(lambda: len(obs.dead) >= len(sent), f"{len(obs.dead)} dead letters")
        assert sorted(d.topic for d in obs.dead) == sorted(topic for topic, _payload in sent)
        assert all(d.component == "control" and d.reason for d in obs.dead)
        assert dict(service.dead_letter_kinds) == dict(Counter(sent.values()))
        # ... and nothing else changed
        assert service.faults.latched("inv1") == []
        assert service.csms.csms_online is True  # the malformed "offline" was not believed

        # a reading control cannot use: dead-lettered when it is read, the command goes on
        reading_topic = telemetry_topic(SITE, "inverter", "inv1")
        passed: list[str] = []
        service.taps.append(lambda topic, _payload: passed.append(topic))
        obs.mqtt.publish(reading_topic, b'{"schema": "telemetry/1"}', qos=1)
        await _until(lambda: reading_topic in passed, "the reading did not arrive")
        obs.send(_command("inv1", "i1", 3_000.0))
        assert (await obs.ack("i1")).result == "applied"
        assert sim.decode_point(704, "WSet") == -3_000  # SunSpec sign: + injection
        await _until(lambda: len(obs.dead) == len(sent) + 1, "reading not dead-lettered")
        letter = obs.dead[-1]
        assert letter.topic == reading_topic
        assert letter.reason.startswith("site: Field required")

        dead = next(f for f in families(service) if f.name == "gridflex_dead_letters")
        counted = {s.labels["reason"]: s.value for s in dead.samples if s.value}
        assert counted == dict(Counter([*sent.values(), "malformed"]))

    _run(fleet, mosquitto, site, tmp_path, body)
