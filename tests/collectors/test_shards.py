"""Collector shards (``--shard i/n``): a stable split of the site, each asset polled once."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collectors.ocpp.requests import RequestServer
from control.ocpp import CsmsClient
from gridflex.broker import Broker
from gridflex.contract import CsmsRequest, csms_request_topic, csms_result_topic
from gridflex.net import free_port, free_port_block, wait_for_port
from gridflex.shard import Shard, parse_shard, shard_of
from tests.collectors.test_ocpp_cli import PASSWORD, gridflex, stop
from tests.mqtt_helpers import Subscriber

ROOT = Path(__file__).resolve().parents[2]

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=32)


@given(key=ids, count=st.integers(1, 16))
def test_every_asset_belongs_to_exactly_one_shard(key: str, count: int) -> None:
    owners = [i for i in range(1, count + 1) if Shard(i, count).owns(key)]
    assert owners == [shard_of(key, count)]


def test_the_split_does_not_depend_on_the_process_hash_seed() -> None:
    """CRC-32, not Python's salted ``hash``: another process with another seed agrees."""
    keys = [f"inv{i}" for i in range(50)]
    code = (
        "import json; from gridflex.shard import shard_of; "
        f"print(json.dumps([shard_of(k, 4) for k in {keys!r}]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == [shard_of(k, 4) for k in keys]
    assert set(json.loads(out.stdout)) == {1, 2, 3, 4}  # 50 ids do reach every shard


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", "-1/2"])
def test_shard_option_refuses_what_is_not_i_of_n(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_shard(text)


def test_shard_component_names_the_presence_topic() -> None:
    assert parse_shard("2/3").component("modbus") == "modbus-2of3"
    assert parse_shard("1/1").component("ocpp") == "ocpp"


def _by_boot(sub: Subscriber, site: str, kind: str) -> dict[str, set[str]]:
    """Per asset, the boots (collector processes) whose telemetry it was in."""
    boots: dict[str, set[str]] = {}
    prefix = f"gridflex/v1/{site}/{kind}/"
    for topic, payload in list(sub.messages):
        if topic.startswith(prefix) and topic.endswith("/telemetry"):
            reading = json.loads(payload)
            boots.setdefault(reading["asset"], set()).add(reading["boot"])
    return boots


def _presences(sub: Subscriber, site: str) -> dict[str, dict[str, Any]]:
    """The last online presence of each collector component."""
    found: dict[str, dict[str, Any]] = {}
    for topic, payload in list(sub.messages):
        if topic.startswith(f"gridflex/v1/{site}/collector/"):
            status = json.loads(payload)
            if status["online"]:
                found[status["component"]] = status
    return found


@pytest.mark.integration
@pytest.mark.slow
def test_two_modbus_collectors_poll_every_inverter_exactly_once(
    mosquitto: Broker, tmp_path: Path
) -> None:
    count = 8
    site = f"t{uuid.uuid4().hex[:8]}"
    base = free_port_block(count)
    assets = "".join(
        f'[[assets]]\nid = "inv{i}"\nkind = "inverter"\nhost = "127.0.0.1"\nport = {base + i}\n'
        "max_charge_w = 11000\n\n"
        for i in range(count)
    )
    path = tmp_path / "site.toml"
    path.write_text(
        f'[site]\nid = "{site}"\n\n[mqtt]\nurl = "{mosquitto.url}"\n\n'
        f"[modbus]\npoll_interval_ms = 200\n\n{assets}",
        encoding="utf-8",
    )
    names = [f"inv{i}" for i in range(count)]
    assert {shard_of(a, 2) for a in names} == {1, 2}  # both shards have work
    sim = gridflex("sim", "inverters", "--count", str(count), "--base-port", str(base))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        assert wait_for_port("127.0.0.1", base + count - 1, timeout_s=30)
        with Subscriber(mosquitto.url, f"gridflex/v1/{site}/#") as sub:
            procs = [
                gridflex("collect", "modbus", "--site", str(path), "--shard", f"{i}/2")
                for i in (1, 2)
            ]
            assert sub.wait_for(
                lambda _m: (
                    len(_by_boot(sub, site, "inverter")) == count
                    and len(_presences(sub, site)) == 2
                ),
                timeout_s=60,
            ), sub.messages[-5:]
            codes = [stop(p) for p in procs]
            assert codes == [0, 0]
            by_boot = _by_boot(sub, site, "inverter")
            presences = _presences(sub, site)
    finally:
        for proc in procs:
            stop(proc)
        stop(sim)
    assert sorted(by_boot) == names
    assert all(len(boots) == 1 for boots in by_boot.values())  # one process per asset
    assert sorted(presences) == ["modbus-1of2", "modbus-2of2"]
    owned = [set(presences[f"modbus-{i}of2"]["assets"]) for i in (1, 2)]
    assert not owned[0] & owned[1]
    assert owned[0] | owned[1] == set(names)
    for i in (1, 2):
        boot = presences[f"modbus-{i}of2"]["boot"]
        assert {a for a, b in by_boot.items() if boot in b} == owned[i - 1]


def _ocpp_site(path: Path, site: str, mqtt_url: str, port: int, stations: list[int]) -> Path:
    assets = "".join(
        f'[[assets]]\nid = "evse{n}"\nkind = "evse"\nstation_id = "cs-{n:04d}"\n'
        f'password = "{PASSWORD}"\nmax_charge_w = 22000\nmax_discharge_w = 11000\n\n'
        for n in stations
    )
    path.write_text(
        f'[site]\nid = "{site}"\n\n[mqtt]\nurl = "{mqtt_url}"\n\n'
        f"[ocpp]\nport = {port}\nmeter_interval_s = 0.5\n\n{assets}",
        encoding="utf-8",
    )
    return path


@pytest.mark.integration
@pytest.mark.slow
def test_two_csms_shards_serve_every_station_exactly_once(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """Each CSMS shard listens on its own port; each station is configured for its shard."""
    site = f"t{uuid.uuid4().hex[:8]}"
    numbers = list(range(1, 7))
    owner = {n: shard_of(f"cs-{n:04d}", 2) for n in numbers}
    assert set(owner.values()) == {1, 2}
    ports = {1: free_port(), 2: free_port()}
    full = _ocpp_site(tmp_path / "site.toml", site, mosquitto.url, ports[1], numbers)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with Subscriber(mosquitto.url, f"gridflex/v1/{site}/#") as sub:
            for i in (1, 2):
                procs.append(
                    gridflex("collect", "ocpp", "--site", str(full), "--shard", f"{i}/2",
                             "--port", str(ports[i]))
                )  # fmt: skip
            for i in (1, 2):
                assert wait_for_port("127.0.0.1", ports[i], timeout_s=30)
                mine = [n for n in numbers if owner[n] == i]
                part = _ocpp_site(tmp_path / f"sim{i}.toml", site, mosquitto.url, ports[i], mine)
                procs.append(
                    gridflex("sim", "chargers", "--site", str(part), "--csms-url",
                             f"ws://127.0.0.1:{ports[i]}/ocpp", "--seed", str(i))
                )  # fmt: skip
            assert sub.wait_for(
                lambda _m: len(_by_boot(sub, site, "evse")) == len(numbers), timeout_s=60
            )
            codes = [stop(p) for p in reversed(procs)]
            assert codes == [0, 0, 0, 0]
            by_boot = _by_boot(sub, site, "evse")
            presences = _presences(sub, site)
    finally:
        for proc in procs:
            stop(proc)
    assert all(len(boots) == 1 for boots in by_boot.values())
    assert sorted(presences) == ["ocpp-1of2", "ocpp-2of2"]
    for i in (1, 2):
        expected = {f"evse{n}" for n in numbers if owner[n] == i}
        assert set(presences[f"ocpp-{i}of2"]["assets"]) == expected


class _Recorder:
    """An MQTT client that records what is published (``RequestServer`` and ``CsmsClient``)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        self.published.append((topic, payload))
        return True

    def subscribe(self, *_args: object, **_kwargs: object) -> None:
        return None


def _expired_request(site: str, asset: str) -> tuple[str, bytes]:
    request = CsmsRequest(
        site=site, asset=asset, ts_ms=1_000, request_id="r1", kind="setpoint",
        power_w=1000.0, valid_until_ms=2_000,
    )  # fmt: skip
    return csms_request_topic(site, asset), request.to_json()


def test_a_csms_shard_leaves_requests_for_another_shards_evses_unanswered() -> None:
    """An expired request is refused at once by its owner; another shard stays silent."""
    mqtt = _Recorder()
    csms = SimpleNamespace(settings=SimpleNamespace(site_id="s1"))
    server = RequestServer(csms, mqtt, foreign=frozenset({"evse2"}))  # type: ignore[arg-type]
    server.handle(*_expired_request("s1", "evse2"))
    assert mqtt.published == []
    server.handle(*_expired_request("s1", "evse1"))
    assert [topic for topic, _ in mqtt.published] == [csms_result_topic("s1", "evse1")]


def _presence(component: str, online: bool, assets: list[str]) -> tuple[str, bytes]:
    status = {"schema": "collector/1", "component": component, "online": online}
    status |= {"site": "s1", "ts_ms": 1}
    payload = json.dumps(status | ({"assets": assets} if assets else {})).encode()
    return f"gridflex/v1/s1/collector/{component}/status", payload


def test_control_fails_only_the_evses_of_an_offline_csms_shard() -> None:
    client = CsmsClient(_Recorder(), "s1")  # type: ignore[arg-type]
    client._on_collector(*_presence("ocpp-1of2", True, ["evse1"]))
    client._on_collector(*_presence("ocpp-2of2", True, ["evse2"]))
    client._on_collector(*_presence("modbus", False, ["inv1"]))  # not a CSMS
    assert not client.csms_offline("evse1")
    assert not client.csms_offline("evse2")
    client._on_collector(*_presence("ocpp-1of2", False, []))  # its last will: no assets
    assert client.csms_offline("evse1")
    assert not client.csms_offline("evse2")
