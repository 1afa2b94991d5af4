"""Validation of raw telemetry and acks: what passes, and why each refusal is refused."""

from __future__ import annotations

import base64
import json

import pytest

from gridflex.contract import DeadLetter, DispatchAck, EventReport, Telemetry, parse_payload
from pipelines.validate import (
    RawMessage,
    Rejected,
    to_dead_letter,
    validate_ack,
    validate_event,
    validate_telemetry,
)
from tests.pipelines.helpers import T0_MS, ack, raw, raw_ack, telemetry


def check(message: RawMessage, *, now_ms: int | None = None) -> Telemetry | Rejected:
    return validate_telemetry(
        message,
        site_id="s1",
        nominal_hz=50.0,
        now_ms=now_ms if now_ms is not None else message.received_ms,
    )


def rejected(message: RawMessage, **kw: int) -> Rejected:
    result = check(message, **kw)
    assert isinstance(result, Rejected), result
    return result


def test_valid_telemetry_passes_with_its_values() -> None:
    payload = telemetry("inv-1", T0_MS, 7, soc_pct=55.5, energy_export_wh=1234.0)
    result = check(raw(payload))
    assert isinstance(result, Telemetry)
    assert (result.asset, result.seq, result.soc_pct, result.freq_hz) == ("inv-1", 7, 55.5, 50.0)


def test_evse_telemetry_without_frequency_passes() -> None:
    payload = telemetry("cs-1", T0_MS, 1, kind="evse", freq_hz=None, transaction_id="tx-9")
    assert isinstance(check(raw(payload)), Telemetry)


def test_not_json_is_refused_as_not_json() -> None:
    message = raw(b"{not json", topic="gridflex/v1/s1/inverter/inv-1/telemetry", received_ms=T0_MS)
    result = rejected(message)
    assert result.kind == "not_json"
    assert result.message is message


def test_nan_is_not_json() -> None:
    body = json.dumps(telemetry("inv-1", T0_MS, 1)).replace("-1500.0", "NaN").encode()
    message = raw(body, topic="gridflex/v1/s1/inverter/inv-1/telemetry", received_ms=T0_MS)
    assert rejected(message).kind == "not_json"


def test_a_status_payload_on_a_telemetry_topic_is_the_wrong_schema() -> None:
    payload = {"schema": "status/1", "site": "s1", "asset": "inv-1", "kind": "inverter"}
    message = raw(
        json.dumps(payload).encode(),
        topic="gridflex/v1/s1/inverter/inv-1/telemetry",
        received_ms=T0_MS,
    )
    result = rejected(message)
    assert result.kind == "wrong_schema"
    assert "status/1" in result.reason


def test_missing_field_is_invalid() -> None:
    payload = telemetry("inv-1", T0_MS, 1)
    del payload["power_w"]
    result = rejected(raw(payload))
    assert result.kind == "invalid"
    assert "power_w" in result.reason


def test_soc_above_100_is_out_of_range() -> None:
    result = rejected(raw(telemetry("inv-1", T0_MS, 1, soc_pct=150.0)))
    assert result.kind == "out_of_range"
    assert "soc_pct" in result.reason


def test_implausible_frequency_is_out_of_range() -> None:
    result = rejected(raw(telemetry("inv-1", T0_MS, 1, freq_hz=30.0)))
    assert result.kind == "out_of_range"
    assert "freq_hz 30.0" in result.reason


def test_a_reading_from_the_future_is_out_of_range() -> None:
    payload = telemetry("inv-1", T0_MS + 120_000, 1)
    result = rejected(raw(payload, received_ms=T0_MS))
    assert result.kind == "out_of_range"
    assert "ahead of the pipeline clock" in result.reason


def test_a_small_clock_skew_is_accepted() -> None:
    payload = telemetry("inv-1", T0_MS + 2_000, 1)
    assert isinstance(check(raw(payload, received_ms=T0_MS)), Telemetry)


@pytest.mark.parametrize(
    ("topic", "mismatch"),
    [
        ("gridflex/v1/s1/inverter/inv-2/telemetry", "asset"),
        ("gridflex/v1/s1/evse/inv-1/telemetry", "kind"),
        ("gridflex/v1/s2/inverter/inv-1/telemetry", "site"),
    ],
)
def test_topic_and_payload_must_agree(topic: str, mismatch: str) -> None:
    result = rejected(raw(telemetry("inv-1", T0_MS, 1), topic=topic))
    assert result.kind == "topic_mismatch"
    assert result.reason.startswith(mismatch)


def test_telemetry_of_another_site_is_refused() -> None:
    result = rejected(raw(telemetry("inv-1", T0_MS, 1, site="s9")))
    assert result.kind == "topic_mismatch"
    assert "s9" in result.reason


@pytest.mark.parametrize(
    "topic",
    ["gridflex/v1/s1/inverter/inv-1/status", "other/topic", "gridflex/v1/s1/grid/frequency"],
)
def test_a_non_telemetry_topic_is_a_bad_topic(topic: str) -> None:
    assert rejected(raw(telemetry("inv-1", T0_MS, 1), topic=topic)).kind == "bad_topic"


def test_dead_letter_keeps_reason_topic_and_text_payload() -> None:
    message = raw(b"{not json", topic="gridflex/v1/s1/inverter/inv-1/telemetry", received_ms=T0_MS)
    letter = to_dead_letter(rejected(message), site="s1")
    parsed = parse_payload(letter.to_json())
    assert isinstance(parsed, DeadLetter)
    assert parsed.site == "s1"
    assert parsed.component == "pipeline"
    assert parsed.reason.startswith("not_json: ")
    assert parsed.topic == message.topic
    assert (parsed.payload, parsed.payload_encoding) == ("{not json", "utf-8")
    assert parsed.ts_ms == T0_MS


def test_dead_letter_of_binary_payload_is_base64() -> None:
    body = b"\xff\xfe\x00garbage"
    message = raw(body, topic="gridflex/v1/s1/inverter/inv-1/telemetry", received_ms=T0_MS)
    letter = to_dead_letter(rejected(message), site="s1")
    assert letter.payload_encoding == "base64"
    assert base64.b64decode(letter.payload) == body


# --------------------------------------------------------------------------- acks


def ack_refusal(message: RawMessage) -> Rejected:
    result = validate_ack(message, site_id="s1")
    assert isinstance(result, Rejected), result
    return result


def test_a_valid_ack_passes_with_its_values() -> None:
    result = validate_ack(raw_ack(ack("inv-1", "c1", rules=["ramp"])), site_id="s1")
    assert isinstance(result, DispatchAck)
    assert (result.asset, result.command_id, result.result) == ("inv-1", "c1", "applied")
    assert result.rules == ["ramp"]
    assert result.latency_from_telemetry_ms == 60


def test_an_ack_without_latencies_passes() -> None:
    payload = ack("inv-1", "c1", result="duplicate", latency_from_issued_ms=None)
    payload.pop("latency_from_telemetry_ms")
    result = validate_ack(raw_ack(payload), site_id="s1")
    assert isinstance(result, DispatchAck)
    assert result.latency_from_telemetry_ms is None


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"{not json", "not_json"),
        (b'{"schema": "ack/1", "requested_w": NaN}', "not_json"),
        (b"[1, 2]", "wrong_schema"),
        (json.dumps(telemetry("inv-1", T0_MS, 1)).encode(), "wrong_schema"),
        (json.dumps({**ack("inv-1", "c1"), "result": "maybe"}).encode(), "invalid"),
        (json.dumps({**ack("inv-1", "c1"), "seq": -1}).encode(), "out_of_range"),
        (json.dumps({**ack("inv-1", "c1"), "extra": 1}).encode(), "invalid"),
    ],
    ids=["not-json", "nan", "array", "telemetry", "bad-result", "negative-seq", "extra-field"],
)
def test_a_bad_ack_is_refused_with_its_reason_kind(payload: bytes, kind: str) -> None:
    message = raw_ack(payload, topic="gridflex/v1/s1/dispatch/inv-1/ack")
    assert ack_refusal(message).kind == kind


def test_an_ack_on_another_assets_topic_is_a_topic_mismatch() -> None:
    refusal = ack_refusal(raw_ack(ack("inv-1", "c1"), topic="gridflex/v1/s1/dispatch/inv-2/ack"))
    assert refusal.kind == "topic_mismatch"
    assert refusal.reason.startswith("asset 'inv-2' in topic")


def test_an_ack_of_another_site_is_refused() -> None:
    refusal = ack_refusal(raw_ack(ack("inv-1", "c1", site="s9")))
    assert refusal.kind == "topic_mismatch"
    assert "s9" in refusal.reason


def test_an_ack_for_an_asset_outside_the_site_is_an_unknown_asset() -> None:
    message = raw_ack(ack("inv-9", "c1"))  # on its own topic, of this site
    refusal = validate_ack(message, site_id="s1", assets=frozenset({"inv-1", "inv-2"}))
    assert isinstance(refusal, Rejected), refusal
    assert refusal.kind == "unknown_asset"
    assert refusal.reason == "asset 'inv-9' is not an asset of site 's1'"
    letter = to_dead_letter(refusal, site="s1")
    assert letter.reason == "unknown_asset: asset 'inv-9' is not an asset of site 's1'"
    assert letter.topic == "gridflex/v1/s1/dispatch/inv-9/ack"


def test_an_ack_for_an_asset_of_the_site_passes_the_asset_check() -> None:
    message = raw_ack(ack("inv-2", "c1"))
    result = validate_ack(message, site_id="s1", assets=frozenset({"inv-1", "inv-2"}))
    assert isinstance(result, DispatchAck)
    assert result.asset == "inv-2"


def test_a_topic_mismatch_is_named_before_the_asset_check() -> None:
    message = raw_ack(ack("inv-9", "c1"), topic="gridflex/v1/s1/dispatch/inv-1/ack")
    refusal = validate_ack(message, site_id="s1", assets=frozenset({"inv-1"}))
    assert isinstance(refusal, Rejected), refusal
    assert refusal.kind == "topic_mismatch"


@pytest.mark.parametrize(
    "topic", ["gridflex/v1/s1/dispatch/inv-1/command", "gridflex/v1/s1/ack", "other/ack"]
)
def test_an_ack_off_the_ack_topic_is_a_bad_topic(topic: str) -> None:
    assert ack_refusal(raw_ack(ack("inv-1", "c1"), topic=topic)).kind == "bad_topic"


def test_a_deeply_nested_ack_is_refused_as_not_json_by_the_depth_bound() -> None:
    message = raw_ack(b"[" * 100_000 + b"]" * 100_000, topic="gridflex/v1/s1/dispatch/a/ack")
    refusal = ack_refusal(message)
    assert refusal.kind == "not_json"
    assert "recursion limit" in refusal.reason


def _event_payload(**over: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "schema": "event/1", "site": "s1", "component": "control", "asset": "inv1",
        "ts_ms": T0_MS, "event": "fault", "fault_code": "0x04", "event_id": "e1",
    }  # fmt: skip
    doc.update(over)
    return doc


@pytest.mark.parametrize(
    ("payload", "topic", "kind"),
    [
        (_event_payload(), "gridflex/v1/s1/event/control", None),
        (_event_payload(), "gridflex/v1/s1/event/collect-ocpp", "topic_mismatch"),
        (_event_payload(site="s2"), "gridflex/v1/s2/event/control", "topic_mismatch"),
        ({k: v for k, v in _event_payload().items() if k != "event_id"},
         "gridflex/v1/s1/event/control", "invalid"),
        (_event_payload(schema="ack/1"), "gridflex/v1/s1/event/control", "wrong_schema"),
        (_event_payload(), "gridflex/v1/s1/dispatch/inv1/ack", "bad_topic"),
    ],
)  # fmt: skip
def test_an_event_is_checked_against_its_topic_the_contract_and_the_site(
    payload: dict[str, object], topic: str, kind: str | None
) -> None:
    result = validate_event(raw(json.dumps(payload).encode(), topic=topic), site_id="s1")
    if kind is None:
        assert isinstance(result, EventReport)
        assert (result.component, result.fault_code, result.event_id) == ("control", "0x04", "e1")
    else:
        assert isinstance(result, Rejected)
        assert result.kind == kind
