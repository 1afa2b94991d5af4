"""Topics and payload models of the MQTT contract."""

from __future__ import annotations

import json

import jsonschema
import pytest

from gridflex.contract import (
    TELEMETRY_STATUSES,
    AssetStatus,
    Capabilities,
    ContractError,
    DeadLetter,
    GridFrequency,
    Telemetry,
    deadletter_topic,
    parse_payload,
    parse_topic,
    status_topic,
    telemetry_topic,
)
from gridflex.contract_docs import schemas


def _telemetry(**over: object) -> Telemetry:
    fields: dict[str, object] = {
        "site": "depot-1",
        "asset": "inv-001",
        "kind": "inverter",
        "ts_ms": 1_764_000_000_000,
        "seq": 7,
        "boot": "b1",
        "power_w": -3500.0,
        "freq_hz": 49.98,
        "soc_pct": 55.5,
    }
    fields.update(over)
    return Telemetry.model_validate(fields)


def test_topics_follow_the_v1_tree() -> None:
    assert telemetry_topic("depot-1", "inverter", "inv-001") == (
        "gridflex/v1/depot-1/inverter/inv-001/telemetry"
    )
    assert status_topic("s", "evse", "cs_2") == "gridflex/v1/s/evse/cs_2/status"
    assert deadletter_topic("pipeline") == "gridflex/v1/deadletter/pipeline"


def test_topic_refuses_an_asset_id_outside_the_pattern() -> None:
    with pytest.raises(ContractError, match="asset"):
        telemetry_topic("s", "inverter", "bad/id")


def test_parse_topic_round_trips_and_refuses_foreign_topics() -> None:
    parts = parse_topic(telemetry_topic("s1", "evse", "cs-9"))
    assert parts == {"site": "s1", "kind": "evse", "asset": "cs-9", "leaf": "telemetry"}
    assert parse_topic("gridflex/v1/s1/grid/frequency")["kind"] == "grid"
    with pytest.raises(ContractError):
        parse_topic("gridflex/v1/s1/inverter/a/forecast")
    with pytest.raises(ContractError):
        parse_topic("other/v1/s1/grid/frequency")


def test_telemetry_serialises_with_schema_field_and_without_nones() -> None:
    obj = json.loads(_telemetry().to_json())
    assert obj["schema"] == "telemetry/1"
    assert "voltage_v" not in obj
    assert obj["power_w"] == -3500.0


def test_serialised_payloads_validate_against_the_published_json_schema() -> None:
    docs = schemas()
    samples = [
        _telemetry(),
        GridFrequency(
            site="s",
            ts_ms=2000,
            window_start_ms=1000,
            window_end_ms=2000,
            nominal_hz=50,
            mean_hz=49.8,
            min_hz=49.79,
            max_hz=49.81,
            deviation_hz=-0.2,
            rocof_hz_per_s=0.0,
            samples=5,
            assets=1,
        ),
        DeadLetter(site="s", component="pipeline", ts_ms=1, reason="not JSON", payload="{"),
        _telemetry(kind="evse", status="suspended", device_status="SuspendedEV"),
        AssetStatus(
            site="s",
            asset="cs-1",
            kind="evse",
            ts_ms=1,
            online=True,
            state="online",
            transaction_id="tx-1",
            capabilities=Capabilities(
                protocol="ocpp2.1",
                rated_charge_w=11_000,
                rated_discharge_w=7_000,
                site_max_charge_w=22_000,
                site_max_discharge_w=10_000,
                v2x=True,
            ),
        ),
    ]
    for sample in samples:
        obj = json.loads(sample.to_json())
        jsonschema.validate(obj, docs[obj["schema"]])


def test_parse_payload_names_the_bad_field() -> None:
    raw = _telemetry().to_json().replace(b'"soc_pct":55.5', b'"soc_pct":140')
    with pytest.raises(ContractError, match="soc_pct"):
        parse_payload(raw)


def test_parse_payload_refuses_non_json_and_unknown_schema() -> None:
    with pytest.raises(ContractError, match="not JSON"):
        parse_payload(b"{nope")
    with pytest.raises(ContractError, match="unknown schema"):
        parse_payload(b'{"schema": "weather/1"}')


def test_round_trip_keeps_every_field() -> None:
    original = _telemetry(voltage_v=231.0, energy_import_wh=10.0, energy_export_wh=2.5)
    assert parse_payload(original.to_json()) == original


def test_telemetry_status_is_one_vocabulary_and_the_device_word_is_kept_apart() -> None:
    assert {
        "idle",
        "charging",
        "discharging",
        "suspended",
        "fault",
        "unavailable",
    } == TELEMETRY_STATUSES
    obj = json.loads(_telemetry(status="idle", device_status="STANDBY").to_json())
    assert (obj["status"], obj["device_status"]) == ("idle", "STANDBY")
    with pytest.raises(ContractError, match="status"):
        parse_payload(_telemetry().to_json().replace(b'"power_w"', b'"status":"RUNNING","power_w"'))


def test_dead_letter_requires_a_site() -> None:
    letter = b'{"schema":"deadletter/1","component":"x","ts_ms":1,"reason":"r","payload":"p"}'
    with pytest.raises(ContractError, match="site"):
        parse_payload(letter)


def test_capabilities_name_device_ratings_and_site_limits_apart() -> None:
    fields = set(Capabilities.model_fields)
    assert {"rated_charge_w", "rated_discharge_w", "site_max_charge_w"} <= fields
    assert "site_max_discharge_w" in fields
    assert not {"max_charge_w", "max_discharge_w"} & fields


def test_parse_payload_refuses_deeply_nested_json_with_a_contract_error() -> None:
    with pytest.raises(ContractError, match="not JSON"):
        parse_payload(b"[" * 20_000 + b"]" * 20_000)
