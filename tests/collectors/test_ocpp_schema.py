"""The fastjsonschema OCPP validators agree with the ``ocpp`` package's Draft4Validator."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ocpp
import pytest
from jsonschema.exceptions import ValidationError
from ocpp.exceptions import OCPPError
from ocpp.messages import MessageType, get_validator

from collectors.ocpp.schema import SchemaViolation, ValidatorCache, compile_schema, ocpp_error_for

SCHEMA_FILES = sorted(Path(ocpp.__file__).parent.glob("v2*/schemas/*.json"))

TX_EVENT = {
    "eventType": "Updated",
    "timestamp": "2025-01-01T12:00:00.000Z",
    "triggerReason": "MeterValuePeriodic",
    "seqNo": 3,
    "transactionInfo": {"transactionId": "tx-1", "chargingState": "Charging"},
    "evse": {"id": 1, "connectorId": 1},
    "meterValue": [
        {
            "timestamp": "2025-01-01T12:00:00.000Z",
            "sampledValue": [
                {
                    "value": 7400.0,
                    "measurand": "Power.Active.Import",
                    "unitOfMeasure": {"unit": "W"},
                },
                {"value": 12.5, "measurand": "Energy.Active.Import.Register"},
                {"value": 55, "measurand": "SoC", "location": "EV"},
            ],
        }
    ],
}
BOOT = {
    "chargingStation": {"model": "M1", "vendorName": "V", "serialNumber": "S1"},
    "reason": "PowerUp",
}
NEEDS_21 = {
    "evseId": 1,
    "chargingNeeds": {
        "requestedEnergyTransfer": "DC_BPT",
        "departureTime": "2025-01-01T18:00:00Z",
        "dcChargingParameters": {"evMaxCurrent": 30.0, "evMaxVoltage": 450.0, "stateOfCharge": 40},
        "v2xChargingParameters": {
            "maxChargePower": 11000.0,
            "maxDischargePower": 7000.0,
            "targetSoC": 80,
        },
    },
}
NEEDS_201 = {
    "evseId": 1,
    "chargingNeeds": {
        "requestedEnergyTransfer": "AC_three_phase",
        "acChargingParameters": {
            "energyAmount": 20000,
            "evMinCurrent": 6,
            "evMaxCurrent": 16,
            "evMaxVoltage": 230,
        },
    },
}
PROFILE_21 = {
    "evseId": 1,
    "chargingProfile": {
        "id": 1,
        "stackLevel": 1,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Relative",
        "transactionId": "tx-1",
        "chargingSchedule": [
            {
                "id": 1,
                "chargingRateUnit": "W",
                "chargingSchedulePeriod": [
                    {
                        "startPeriod": 0,
                        "operationMode": "CentralSetpoint",
                        "setpoint": -5000.0,
                        "limit": 11000.0,
                        "dischargeLimit": -7000.0,
                    }
                ],
            }
        ],
    },
}

SAMPLES: list[tuple[str, str, dict[str, Any]]] = [
    ("2.0.1", "TransactionEvent", TX_EVENT),
    ("2.1", "TransactionEvent", TX_EVENT),
    ("2.0.1", "BootNotification", BOOT),
    ("2.1", "BootNotification", BOOT),
    ("2.1", "NotifyEVChargingNeeds", NEEDS_21),
    ("2.0.1", "NotifyEVChargingNeeds", NEEDS_201),
    ("2.1", "SetChargingProfile", PROFILE_21),
]


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def _drop(doc: Any, path: tuple[Any, ...]) -> Any:
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return doc


def mutations(doc: Any) -> Iterator[tuple[str, Any]]:
    """Broken variants of a valid payload: each key dropped, extra keys, wrong leaf values."""

    def walk(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            extra = _set(doc, (*path, "zzExtra"), 1) if path else {**doc, "zzExtra": 1}
            yield f"{path} + extra key", extra
            for key, value in node.items():
                yield f"{(*path, key)} dropped", _drop(doc, (*path, key))
                yield from walk(value, (*path, key))
        elif isinstance(node, list):
            yield f"{path} empty", _set(doc, path, [])
            yield f"{path} not a list", _set(doc, path, {"a": 1})
            for index, value in enumerate(node):
                yield from walk(value, (*path, index))
        else:
            replacements: list[Any] = ["x" * 600, "NotAnEnumValue", 123, 1.0, -1e9, True, None, []]
            for replacement in replacements:
                if replacement != node or type(replacement) is not type(node):
                    yield f"{path} = {replacement!r:.20}", _set(doc, path, replacement)

    yield from walk(doc, ())


def _reference(version: str, action: str, payload: Any) -> str | None:
    """jsonschema's first error keyword, None when valid."""
    validator = get_validator(MessageType.Call, action, version)
    try:
        validator.validate(payload)
    except ValidationError as exc:
        return str(exc.validator)
    return None


def _ours(cache: ValidatorCache, version: str, action: str, payload: Any) -> str | None:
    check = cache.get(version, action, request=True)
    assert check is not None
    try:
        check(payload)
    except SchemaViolation as exc:
        return exc.keyword
    return None


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_every_ocpp_2x_schema_compiles(path: Path) -> None:
    validator = compile_schema(json.loads(path.read_text(encoding="utf-8-sig")))
    assert callable(validator)


@pytest.mark.parametrize(("version", "action", "payload"), SAMPLES, ids=lambda v: str(v)[:24])
def test_valid_samples_pass_both_validators(version: str, action: str, payload: Any) -> None:
    assert _reference(version, action, payload) is None
    assert _ours(ValidatorCache(), version, action, payload) is None


@pytest.mark.parametrize(("version", "action", "payload"), SAMPLES, ids=lambda v: str(v)[:24])
def test_broken_payloads_get_the_same_verdict_and_first_error_as_jsonschema(
    version: str, action: str, payload: Any
) -> None:
    cache = ValidatorCache()
    checked = 0
    for label, broken in mutations(payload):
        assert _ours(cache, version, action, broken) == _reference(version, action, broken), label
        checked += 1
    assert checked > 20


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_integer_field_refuses_a_float_like_draft4(version: str) -> None:
    # the schema files declare draft-06, where 3.0 is an integer; the ocpp package uses Draft 4
    broken = _set(TX_EVENT, ("seqNo",), 3.0)
    assert _reference(version, "TransactionEvent", broken) == "type"
    assert _ours(ValidatorCache(), version, "TransactionEvent", broken) == "type"


def test_with_several_violations_a_missing_required_field_is_reported_first() -> None:
    # documented difference: jsonschema follows the schema file (properties first)
    broken = _drop(_set(BOOT, ("chargingStation", "model"), 7), ("chargingStation", "vendorName"))
    assert _reference("2.0.1", "BootNotification", broken) == "type"
    assert _ours(ValidatorCache(), "2.0.1", "BootNotification", broken) == "required"


def test_date_time_format_is_not_checked_like_the_ocpp_package() -> None:
    odd = _set(TX_EVENT, ("timestamp",), "yesterday at noon")
    assert _reference("2.1", "TransactionEvent", odd) is None
    assert _ours(ValidatorCache(), "2.1", "TransactionEvent", odd) is None


def test_schema_defaults_are_not_written_into_the_payload() -> None:
    validate = compile_schema({"type": "object", "properties": {"a": {"default": "x"}}})
    payload: dict[str, Any] = {}
    validate(payload)
    assert payload == {}


def test_a_recursive_reference_is_kept_and_still_validates() -> None:
    node = {
        "type": "object",
        "properties": {"child": {"$ref": "#/definitions/node"}},
        "additionalProperties": False,
    }
    validate = compile_schema({"definitions": {"node": node}, "$ref": "#/definitions/node"})
    validate({"child": {"child": {}}})
    with pytest.raises(SchemaViolation) as info:
        validate({"child": {"child": {"x": 1}}})
    assert info.value.keyword == "additionalProperties"
    assert info.value.path == ["child", "child"]


def test_a_property_named_like_an_annotation_is_still_checked() -> None:
    # the annotations (description, javaType, comment) are left out, a property so named stays
    validate = compile_schema(
        {
            "type": "object",
            "description": "annotation",
            "properties": {"description": {"type": "string", "description": "annotation"}},
            "additionalProperties": False,
        }
    )
    validate({"description": "a field"})
    with pytest.raises(SchemaViolation) as info:
        validate({"description": 1})
    assert (info.value.keyword, info.value.path) == ("type", ["description"])


def test_validators_are_compiled_once_per_version_action_and_direction() -> None:
    cache = ValidatorCache()
    request = cache.get("2.1", "TransactionEvent", request=True)
    assert request is cache.get("2.1", "TransactionEvent", request=True)
    assert request is not cache.get("2.1", "TransactionEvent", request=False)
    assert request is not cache.get("2.0.1", "TransactionEvent", request=True)


def test_violation_path_names_the_nested_field() -> None:
    broken = _set(TX_EVENT, ("meterValue", 0, "sampledValue", 1, "value"), "high")
    check = ValidatorCache().get("2.1", "TransactionEvent", request=True)
    assert check is not None
    with pytest.raises(SchemaViolation) as info:
        check(broken)
    assert info.value.path == ["meterValue", 0, "sampledValue", 1, "value"]


@pytest.mark.parametrize(
    ("keyword", "version", "code"),
    [
        ("type", "2.1", "TypeConstraintViolation"),
        ("maxLength", "2.1", "TypeConstraintViolation"),
        ("required", "2.1", "OccurrenceConstraintViolation"),
        ("required", "2.0.1", "OccurenceConstraintViolation"),  # the 2.0.1 spelling
        ("enum", "2.0.1", "PropertyConstraintViolation"),
        ("maximum", "2.1", "PropertyConstraintViolation"),
        ("additionalProperties", "2.1", "FormatViolation"),
    ],
)
def test_schema_keyword_maps_to_the_ocpp_j_error_code(
    keyword: str, version: str, code: str
) -> None:
    assert ocpp_error_for(SchemaViolation(keyword, "x"), version).code == code


def test_unknown_action_has_no_validator() -> None:
    assert ValidatorCache().get("2.1", "NoSuchAction", request=True) is None
    assert ValidatorCache().get("2.1", "../../etc", request=True) is None


def test_validate_raises_the_mapped_ocpp_error_with_the_field_path() -> None:
    broken = _drop(TX_EVENT, ("meterValue", 0, "sampledValue"))
    with pytest.raises(OCPPError) as info:
        ValidatorCache().validate("2.0.1", "TransactionEvent", broken, request=True)
    assert info.value.code == "OccurenceConstraintViolation"
    assert info.value.details["cause"].startswith("meterValue.0: ")
