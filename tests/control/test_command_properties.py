"""Property tests of what the control service reads from MQTT, against arbitrary payloads.

Every message on a command topic is either queued for its asset's worker or dead-lettered,
exactly one of the two, and never raises; a queued command is one whose ack the pipeline
accepts (``pipelines.validate.validate_ack``); valid commands round-trip. Statuses,
readings, CSMS results and the CSMS presence never raise either, and each one that is not a
valid payload of its topic for this site is dead-lettered, once, and only those.
No broker: the service runs on a recording stand-in for its MQTT client.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from control.ledger import Ledger
from control.metrics import DEAD_LETTER_KINDS
from control.service import ControlService
from control.writer import make_ack
from gridflex.config import parse_site
from gridflex.contract import (
    AssetStatus,
    CollectorStatus,
    ContractError,
    CsmsResult,
    DeadLetter,
    DispatchCommand,
    command_topic,
    parse_payload,
)
from pipelines.validate import RawMessage, validate_ack

SITE = "fz1"
ASSETS = ("inv1", "ev1")


class RecordingMqtt:
    """The part of ``AsyncMqttClient`` the service uses before ``start()``: publish."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        self.published.append((topic, payload))
        return True

    def subscribe(self, *_args: Any, **_kwargs: Any) -> None:
        return None


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> ControlService:
    site = parse_site(
        {
            "site": {"id": SITE},
            "mqtt": {"url": "mqtt://127.0.0.1:1"},
            "assets": [
                {"id": "inv1", "kind": "inverter", "host": "127.0.0.1", "port": 1,
                 "max_charge_w": 5_000.0},
                {"id": "ev1", "kind": "evse", "max_charge_w": 11_000.0},
            ],
        }
    )  # fmt: skip
    ledger = Ledger(Path(tmp_path_factory.mktemp("ledger")) / "ledger.sqlite")
    return ControlService(site, ledger, RecordingMqtt())  # type: ignore[arg-type]


def _reset(service: ControlService) -> RecordingMqtt:
    mqtt = service.mqtt
    assert isinstance(mqtt, RecordingMqtt)
    mqtt.published.clear()
    for control in service.control.values():
        control.mailbox.items.clear()
    return mqtt


def _queued(service: ControlService) -> list[DispatchCommand]:
    return [
        job.command
        for control in service.control.values()
        for job in control.mailbox.items
        if job.command is not None
    ]


NUMBERS = st.one_of(
    st.floats(),  # NaN and infinities included: json.dumps writes NaN / Infinity
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _valid(asset: str = "inv1", **fields: Any) -> dict[str, Any]:
    return {
        "schema": "command/1",
        "site": SITE,
        "asset": asset,
        "ts_ms": 1_700_000_000_000,
        "seq": 3,
        "command_id": "c-1",
        "issued_ms": 1_700_000_000_100,
        "setpoint_w": -2_000.0,
        "valid_until_ms": 1_700_000_010_000,
        "mode": "droop",
        "reason": "droop",
        **fields,
    }


COMMAND_FIELDS = st.sampled_from(
    ["schema", "site", "asset", "ts_ms", "seq", "boot", "command_id", "issued_ms", "setpoint_w",
     "base_setpoint_w", "valid_until_ms", "mode", "reason", "freq_hz", "extra"]
)  # fmt: skip


def _check_one_outcome(service: ControlService, topic: str, payload: bytes) -> None:
    mqtt = _reset(service)
    dead_before = service.dead_letters
    service._on_command(topic, payload)  # never raises
    queued = _queued(service)
    dead = service.dead_letters - dead_before
    assert len(queued) + dead == 1, (queued, dead)
    if dead:
        [(dl_topic, letter)] = mqtt.published
        assert dl_topic == "gridflex/v1/deadletter/control"
        dead = DeadLetter.model_validate_json(letter)
        assert dead.topic == topic
        assert len(dead.reason) <= 600, dead.reason[:300]  # logged too: never a whole input
        return
    [command] = queued
    assert b'"schema"' in payload  # a command names its schema, as parse_payload requires
    assert command.site == SITE and topic == command_topic(SITE, command.asset)
    # whatever the writer then does with it, its ack must pass the pipeline's validation
    ack = make_ack(command, "rejected", reason="x", ts_ms=command.ts_ms + 1)
    raw = RawMessage(f"gridflex/v1/{SITE}/dispatch/{command.asset}/ack", ack.to_json(), 0)
    assert not hasattr(validate_ack(raw, site_id=SITE), "kind"), ack.to_json()


@given(
    payload=st.binary(max_size=300),
    asset=st.sampled_from([*ASSETS, "nope"]),
)
@settings(max_examples=200)
def test_any_bytes_on_a_command_topic_are_queued_or_dead_lettered(
    service: ControlService, payload: bytes, asset: str
) -> None:
    _check_one_outcome(service, command_topic(SITE, asset), payload)


@given(
    edits=st.dictionaries(COMMAND_FIELDS, NUMBERS | JSON_VALUES, max_size=3),
    drop=st.lists(COMMAND_FIELDS, max_size=2),
    asset=st.sampled_from(ASSETS),
    topic_asset=st.sampled_from([*ASSETS, "nope"]),
)
# regression: NaN or Infinity in a command was queued, and its ack (requested_w null)
# was then refused by the pipeline
@example(edits={"setpoint_w": math.nan}, drop=[], asset="inv1", topic_asset="inv1")
@example(edits={"setpoint_w": math.inf}, drop=[], asset="inv1", topic_asset="inv1")
@example(edits={"freq_hz": -math.inf}, drop=[], asset="ev1", topic_asset="ev1")
# regression: a seq beyond int64 was queued; its ack would abort the pipeline's history
@example(edits={"seq": 2**64}, drop=[], asset="inv1", topic_asset="inv1")
@example(edits={}, drop=["schema"], asset="inv1", topic_asset="inv1")
# regression: the dead letter and the log line echoed a 256 KB schema value whole
@example(edits={"schema": "y" * 262_144}, drop=[], asset="inv1", topic_asset="inv1")
@settings(max_examples=300)
def test_a_fuzzed_command_is_queued_only_when_valid_and_its_ack_would_be_accepted(
    service: ControlService,
    edits: dict[str, Any],
    drop: list[str],
    asset: str,
    topic_asset: str,
) -> None:
    body = {**_valid(asset), **edits}
    for name in drop:
        body.pop(name, None)
    payload = json.dumps(body, allow_nan=True).encode()
    _check_one_outcome(service, command_topic(SITE, topic_asset), payload)


def test_a_command_written_with_1e400_is_dead_lettered_as_not_finite(
    service: ControlService,
) -> None:
    payload = json.dumps(_valid()).replace("-2000.0", "1e400").encode()
    mqtt = _reset(service)
    service._on_command(command_topic(SITE, "inv1"), payload)
    assert _queued(service) == []
    [(_topic, letter)] = mqtt.published
    assert DeadLetter.model_validate_json(letter).reason == "setpoint_w: not a finite number"


@given(
    setpoint_w=st.floats(-1e6, 1e6),
    seq=st.integers(0, 2**40),
    command_id=st.text(min_size=1, max_size=128),
    boot=st.none() | st.text(min_size=1, max_size=64),
    mode=st.sampled_from(["droop", "fcr", "manual"]),
    asset=st.sampled_from(ASSETS),
)
@settings(max_examples=150)
def test_valid_commands_round_trip_into_the_asset_mailbox(
    service: ControlService,
    *,
    setpoint_w: float,
    seq: int,
    command_id: str,
    boot: str | None,
    mode: str,
    asset: str,
) -> None:
    command = DispatchCommand.model_validate(
        _valid(asset, setpoint_w=setpoint_w, seq=seq, command_id=command_id, boot=boot, mode=mode)
    )
    _reset(service)
    service._on_command(command_topic(SITE, asset), command.to_json())
    assert _queued(service) == [command]
    assert service.control[asset].mailbox.items[0].command == command


@given(
    payload=st.binary(max_size=200)
    | JSON_VALUES.map(lambda v: json.dumps(v, allow_nan=True).encode())
    | st.dictionaries(
        st.sampled_from(
            [
                "schema",
                "asset",
                "ts_ms",
                "power_w",
                "soc_pct",
                "status",
                "device_status",
                "temp_c",
                "online",
                "site",
                "phase",
            ]
        ),
        NUMBERS | st.just("telemetry/1") | st.just("inv1") | st.just("fault"),
    ).map(lambda d: json.dumps(d, allow_nan=True).encode()),
    asset=st.sampled_from(ASSETS),
)
@settings(max_examples=300)
def test_statuses_readings_and_csms_messages_never_raise(
    service: ControlService, payload: bytes, asset: str
) -> None:
    _reset(service)
    service._on_telemetry(f"gridflex/v1/{SITE}/inverter/{asset}/telemetry", payload)
    service.live.reading(asset)
    service._on_status(f"gridflex/v1/{SITE}/inverter/{asset}/status", payload)
    service.csms._on_result(f"gridflex/v1/{SITE}/csms/{asset}/result", payload)
    service.csms._on_collector(f"gridflex/v1/{SITE}/collector/ocpp/status", payload)


def _valid_for(payload: bytes, model: type, topic_asset: str, assets: tuple[str, ...]) -> bool:
    """The oracle, written apart from ``control.inbound``: a payload control may use."""
    try:
        message = parse_payload(payload)
    except ContractError:
        return False
    if not isinstance(message, model) or getattr(message, "site", None) != SITE:
        return False
    if isinstance(message, CollectorStatus):
        return message.component == topic_asset
    if isinstance(message, AssetStatus) and message.kind != "inverter":  # the topic's kind
        return False
    return getattr(message, "asset", None) == topic_asset and topic_asset in assets


def _dead_letters(service: ControlService, handle: Any, topic: str, payload: bytes) -> int:
    mqtt = _reset(service)
    before = service.dead_letters
    handle(topic, payload)  # never raises
    dead = service.dead_letters - before
    letters = [DeadLetter.model_validate_json(p) for t, p in mqtt.published if "deadletter" in t]
    assert len(letters) == dead <= 1, letters
    for letter in letters:
        assert letter.topic == topic and letter.component == "control"
        assert letter.reason.split(":")[0] or letter.reason
        assert len(letter.reason) <= 600, letter.reason[:300]
    return dead


def _status(asset: str = "inv1", **fields: Any) -> dict[str, Any]:
    return {"schema": "status/1", "site": SITE, "asset": asset, "kind": "inverter",
            "ts_ms": 1_700_000_000_000, "online": True, "state": "online", **fields}  # fmt: skip


def _result(asset: str = "ev1", **fields: Any) -> dict[str, Any]:
    return {"schema": "csms-result/1", "site": SITE, "asset": asset, "ts_ms": 1_700_000_000_000,
            "request_id": "c-1", "kind": "setpoint", "phase": "answer", "status": "accepted",
            **fields}  # fmt: skip


def _presence(component: str = "ocpp", **fields: Any) -> dict[str, Any]:
    return {"schema": "collector/1", "site": SITE, "component": component,
            "ts_ms": 1_700_000_000_000, "online": True, **fields}  # fmt: skip


STATUS_KEYS = st.sampled_from(
    ["schema", "site", "asset", "kind", "ts_ms", "online", "state", "faults",
     "consecutive_failures", "extra"]
)  # fmt: skip
RESULT_KEYS = st.sampled_from(
    ["schema", "site", "asset", "ts_ms", "request_id", "kind", "phase", "status", "sent_w"]
)
PRESENCE_KEYS = st.sampled_from(["schema", "site", "component", "online", "assets", "boot"])
OTHER_PAYLOADS = st.sampled_from(
    [json.dumps(_valid()), json.dumps(_status()), json.dumps(_result()), json.dumps(_presence())]
).map(str.encode)


def _edited(base: dict[str, Any], edits: dict[str, Any], drop: list[str]) -> bytes:
    body = {**base, **edits}
    for name in drop:
        body.pop(name, None)
    return json.dumps(body, allow_nan=True).encode()


@given(
    payload=st.binary(max_size=200) | OTHER_PAYLOADS,
    edits=st.dictionaries(STATUS_KEYS, NUMBERS | JSON_VALUES | st.sampled_from(ASSETS), max_size=3),
    drop=st.lists(STATUS_KEYS, max_size=2),
    use_edits=st.booleans(),
    topic_asset=st.sampled_from([*ASSETS, "nope"]),
)
@example(payload=b"", edits={}, drop=[], use_edits=False, topic_asset="inv1")  # a cleared status
@example(payload=b"", edits={}, drop=[], use_edits=True, topic_asset="inv1")
@example(payload=b"", edits={"site": "other"}, drop=[], use_edits=True, topic_asset="inv1")
@example(payload=b"", edits={}, drop=[], use_edits=True, topic_asset="nope")
@settings(max_examples=300)
def test_a_status_is_used_or_dead_lettered_never_both(
    service: ControlService,
    *,
    payload: bytes,
    edits: dict[str, Any],
    drop: list[str],
    use_edits: bool,
    topic_asset: str,
) -> None:
    if use_edits:
        payload = _edited(_status(topic_asset), edits, drop)
    topic = f"gridflex/v1/{SITE}/inverter/{topic_asset}/status"
    dead = _dead_letters(service, service._on_status, topic, payload)
    usable = payload == b"" or _valid_for(payload, AssetStatus, topic_asset, ASSETS)
    assert dead == (0 if usable else 1), payload[:300]


def test_a_collectors_presence_on_the_status_filter_is_not_an_asset_status(
    service: ControlService,
) -> None:
    topic = f"gridflex/v1/{SITE}/collector/modbus/status"
    payload = json.dumps(_presence("modbus")).encode()
    assert _dead_letters(service, service._on_status, topic, payload) == 0


@given(
    payload=st.binary(max_size=200) | OTHER_PAYLOADS,
    edits=st.dictionaries(RESULT_KEYS, NUMBERS | JSON_VALUES | st.sampled_from(ASSETS), max_size=3),
    drop=st.lists(RESULT_KEYS, max_size=2),
    use_edits=st.booleans(),
    topic_asset=st.sampled_from([*ASSETS, "nope"]),
)
@example(payload=b"", edits={}, drop=[], use_edits=True, topic_asset="ev1")
@example(payload=b"", edits={}, drop=[], use_edits=True, topic_asset="inv1")  # not an EVSE
@example(payload=b"", edits={"asset": "inv1"}, drop=[], use_edits=True, topic_asset="ev1")
@settings(max_examples=300)
def test_a_csms_result_is_used_or_dead_lettered_never_both(
    service: ControlService,
    *,
    payload: bytes,
    edits: dict[str, Any],
    drop: list[str],
    use_edits: bool,
    topic_asset: str,
) -> None:
    if use_edits:
        payload = _edited(_result(topic_asset), edits, drop)
    topic = f"gridflex/v1/{SITE}/csms/{topic_asset}/result"
    dead = _dead_letters(service, service.csms._on_result, topic, payload)
    assert dead == (0 if _valid_for(payload, CsmsResult, topic_asset, ("ev1",)) else 1)


@given(
    payload=st.binary(max_size=200) | OTHER_PAYLOADS,
    edits=st.dictionaries(PRESENCE_KEYS, NUMBERS | JSON_VALUES, max_size=3),
    drop=st.lists(PRESENCE_KEYS, max_size=2),
    use_edits=st.booleans(),
    component=st.sampled_from(["ocpp", "ocpp-1of2", "modbus"]),
)
@example(payload=b"", edits={}, drop=[], use_edits=False, component="ocpp")
@example(payload=b"", edits={"online": False}, drop=[], use_edits=True, component="ocpp")
@settings(max_examples=200)
def test_a_csms_presence_is_used_or_dead_lettered_never_both(
    service: ControlService,
    *,
    payload: bytes,
    edits: dict[str, Any],
    drop: list[str],
    use_edits: bool,
    component: str,
) -> None:
    if use_edits:
        payload = _edited(_presence(component), edits, drop)
    topic = f"gridflex/v1/{SITE}/collector/{component}/status"
    service.csms.csms_online = None
    dead = _dead_letters(service, service.csms._on_collector, topic, payload)
    usable = payload == b"" or _valid_for(payload, CollectorStatus, component, ())
    assert dead == (0 if usable else 1), payload[:300]
    if dead or payload == b"" or component != "ocpp":
        assert service.csms.csms_online is None  # a refused presence changes nothing
    else:
        assert service.csms.csms_online is parse_payload(payload).online  # type: ignore[attr-defined]


@given(payload=st.binary(max_size=200) | OTHER_PAYLOADS)
@settings(max_examples=150)
def test_a_reading_control_cannot_use_is_dead_lettered_when_it_is_read(
    service: ControlService, payload: bytes
) -> None:
    topic = f"gridflex/v1/{SITE}/inverter/inv1/telemetry"
    mqtt = _reset(service)
    before = service.dead_letters
    service._on_telemetry(topic, payload)  # parses it at once when it may show a fault
    reading = service.live.reading("inv1")
    letters = [DeadLetter.model_validate_json(p) for t, p in mqtt.published if "deadletter" in t]
    assert len(letters) == service.dead_letters - before == (1 if reading is None else 0)
    assert all(letter.topic == topic for letter in letters)
    assert service.live.reading("inv1") is reading  # dead-lettered once, not at every ask
    kinds = dict(service.dead_letter_kinds)
    assert set(kinds) <= set(DEAD_LETTER_KINDS), kinds
