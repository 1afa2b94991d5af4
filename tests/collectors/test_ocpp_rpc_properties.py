"""Property tests of OCPP-J framing and payload validation against arbitrary input.

``decode_frame`` must turn any bytes or text into a frame or a ``FrameError`` carrying the
CALLERROR OCPP-J prescribes; ``RpcChargePoint.route_message`` must answer every refused
frame with exactly one CALLERROR and never raise; the compiled payload validators must
refuse only with the OCPP error of a schema violation and agree with ``jsonschema`` (the
reference) on what is valid, for the actions the CSMS handles.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from ocpp.exceptions import OCPPError
from ocpp.messages import Call, CallError, CallResult

from collectors.ocpp.rpc import FrameError, decode_frame
from collectors.ocpp.schema import ValidatorCache
from tests.collectors.test_ocpp_rpc import make_station
from tests.collectors.test_ocpp_schema import BOOT, SAMPLES, TX_EVENT, _ours, _reference

VERSIONS = st.sampled_from(["2.0.1", "2.1"])

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
UNIQUE_IDS = st.text(min_size=1, max_size=36)
ACTIONS = st.sampled_from(
    ["BootNotification", "Heartbeat", "StatusNotification", "TransactionEvent", "MeterValues",
     "Authorize", "NotifyEVChargingNeeds", "NotAnAction", ""]
)  # fmt: skip

# Requests the CSMS answers (collectors.ocpp.session), beside the samples of test_ocpp_schema.
CSMS_SAMPLES: list[tuple[str, str, dict[str, Any]]] = [
    *(s for s in SAMPLES if s[1] != "SetChargingProfile"),
    *(
        (version, action, payload)
        for version in ("2.0.1", "2.1")
        for action, payload in (
            ("Heartbeat", {}),
            ("Authorize", {"idToken": {"idToken": "04A1B2C3", "type": "ISO14443"}}),
            (
                "StatusNotification",
                {
                    "timestamp": "2025-01-01T12:00:00Z",
                    "connectorStatus": "Occupied",
                    "evseId": 1,
                    "connectorId": 1,
                },
            ),
            ("MeterValues", {"evseId": 1, "meterValue": TX_EVENT["meterValue"]}),
        )
    ),
]


# ---------------------------------------------------------------- decode_frame


@given(raw=st.binary(max_size=200) | st.text(max_size=200), version=VERSIONS)
@example(raw=b"\xff\xfe", version="2.1")
@example(raw='[2, "\ud800", "Heartbeat", {}]', version="2.0.1")  # a lone surrogate
@example(raw="[" * 100_000, version="2.1")  # nesting far beyond the parser's limit
@example(raw=json.dumps(["x" * 100_000, "id", "Heartbeat", {}]), version="2.1")
@settings(max_examples=300)
def test_any_input_decodes_to_a_frame_or_a_frame_error_only(raw: str | bytes, version: str) -> None:
    try:
        frame = decode_frame(raw, version)
    except FrameError as exc:
        assert isinstance(exc.error, OCPPError)
        json.loads(exc.call_error().to_json())  # the answer is itself a valid frame
        assert len(str(exc)) <= 200  # logged and dead-lettered: never the whole frame
    else:
        assert frame is None or isinstance(frame, Call | CallResult | CallError)


@given(
    frame=st.lists(JSON_VALUES, max_size=6) | JSON_VALUES,
    version=VERSIONS,
)
@settings(max_examples=300)
def test_any_json_value_decodes_to_a_frame_or_a_frame_error_only(frame: Any, version: str) -> None:
    try:
        decode_frame(json.dumps(frame), version)
    except FrameError as exc:
        assert exc.error.code in {
            "RpcFrameworkError",
            "FormatViolation",
            "MessageTypeNotSupported",
        }


@given(unique_id=UNIQUE_IDS, action=ACTIONS, payload=JSON_VALUES, version=VERSIONS)
@settings(max_examples=200)
def test_valid_frames_round_trip(unique_id: str, action: str, payload: Any, version: str) -> None:
    if isinstance(payload, dict):
        call = decode_frame(Call(unique_id, action, payload).to_json(), version)
        assert isinstance(call, Call)
        assert (call.unique_id, call.action, call.payload) == (unique_id, action, payload)
    result = decode_frame(CallResult(unique_id, payload).to_json(), version)
    assert isinstance(result, CallResult)
    assert (result.unique_id, result.payload) == (unique_id, payload)
    error = decode_frame(CallError(unique_id, "InternalError", "x", payload).to_json(), version)
    assert isinstance(error, CallError)
    assert (error.unique_id, error.error_details) == (unique_id, payload)


@given(
    unique_id=JSON_VALUES.filter(lambda v: not isinstance(v, str))
    | st.just("")
    | st.text(min_size=37, max_size=60),
    type_id=st.sampled_from([2, 3, 4]),
    version=VERSIONS,
)
@settings(max_examples=100)
def test_an_unreadable_message_id_is_a_framework_error_under_id_minus_one(
    unique_id: Any, type_id: int, version: str
) -> None:
    try:
        decode_frame(json.dumps([type_id, unique_id, "Heartbeat", {}]), version)
    except FrameError as exc:
        assert (exc.unique_id, exc.error.code) == ("-1", "RpcFrameworkError")
    else:
        raise AssertionError("accepted an unreadable message id")


@given(
    unique_id=UNIQUE_IDS,
    type_id=st.integers(-5, 50).filter(lambda t: t not in (2, 3, 4, 5, 6)) | st.text(max_size=3),
    version=VERSIONS,
)
@settings(max_examples=100)
def test_an_unknown_message_type_is_refused_under_its_own_id(
    unique_id: str, type_id: Any, version: str
) -> None:
    try:
        decode_frame(json.dumps([type_id, unique_id, "Heartbeat", {}]), version)
    except FrameError as exc:
        assert (exc.unique_id, exc.error.code) == (unique_id, "MessageTypeNotSupported")
    else:
        raise AssertionError(f"accepted message type {type_id!r}")


@given(
    unique_id=UNIQUE_IDS,
    extra=st.lists(JSON_VALUES, max_size=4),
    payload=JSON_VALUES,
    version=VERSIONS,
)
@settings(max_examples=150)
def test_a_call_of_the_wrong_shape_gets_its_prescribed_error(
    unique_id: str, extra: list[Any], payload: Any, version: str
) -> None:
    frame = [2, unique_id, "Heartbeat", payload, *extra]
    try:
        decoded = decode_frame(json.dumps(frame), version)
    except FrameError as exc:
        assert exc.unique_id == unique_id
        if extra:
            assert exc.error.code == "RpcFrameworkError"
        else:
            assert not isinstance(payload, dict)
            assert exc.error.code == "FormatViolation"
    else:
        assert not extra and isinstance(payload, dict) and isinstance(decoded, Call)


# ---------------------------------------------------------------- route_message


@given(raw=st.binary(max_size=120) | st.text(max_size=120), version=VERSIONS)
@example(raw='[2,"a","Heartbeat",{"x":1}]', version="2.0.1")
@example(raw='[2,"a","StatusNotification",{}]', version="2.1")
@example(raw='[2,"a","NoSuchAction",{}]', version="2.1")
# regression: answers to no CALL were queued and each logged at ERROR level (log flooding)
@example(raw='[3,"fz1",{}]', version="2.0.1")
@settings(max_examples=200)
def test_routing_any_frame_sends_at_most_one_answer_and_never_raises(
    raw: str | bytes, version: str
) -> None:
    station, connection, refused = make_station(version)
    asyncio.run(station.route_message(raw))
    try:
        decoded = decode_frame(raw, version)
    except FrameError as exc:
        assert connection.sent == [[4, exc.unique_id, exc.error.code, exc.error.description,
                                    exc.error.details]]  # fmt: skip
        assert len(refused) == 1
        return
    if isinstance(decoded, Call):
        assert len(connection.sent) == 1
        assert connection.sent[0][:2] in ([3, decoded.unique_id], [4, decoded.unique_id])
    else:  # an answer to nothing, or an OCPP 2.1 SEND: never answered, never queued
        assert connection.sent == []
        assert station._response_queue.empty()
        assert len(refused) == 1


# ---------------------------------------------------------------- payloads


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


@given(
    sample=st.sampled_from(CSMS_SAMPLES),
    pick=st.integers(0, 10_000),
    value=JSON_VALUES,
    drop=st.booleans(),
)
@example(sample=("2.1", "BootNotification", BOOT), pick=2, value="x" * 60, drop=False)
# regression: a 300 KB value was echoed whole in the CALLERROR's cause, the log, the dead letter
@example(sample=("2.1", "BootNotification", BOOT), pick=5, value="x" * 300_000, drop=False)
@settings(max_examples=300, deadline=None)
def test_a_fuzzed_payload_is_refused_only_with_a_schema_error_and_as_jsonschema_would(
    sample: tuple[str, str, dict[str, Any]], pick: int, value: Any, drop: bool
) -> None:
    version, action, payload = sample
    paths = _paths(payload)
    path = paths[pick % len(paths)]
    broken: Any = copy.deepcopy(payload)
    if not path:
        broken = value
    else:
        node = broken
        for key in path[:-1]:
            node = node[key]
        if drop:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    cache = ValidatorCache()
    try:
        assert cache.validate(version, action, broken, request=True)
        ours_valid = True
    except OCPPError as exc:
        assert len(str(exc.details["cause"])) <= 400  # goes back in the CALLERROR
        assert exc.code in {
            "FormatViolation",
            "FormationViolation",
            "TypeConstraintViolation",
            "OccurenceConstraintViolation",
            "OccurrenceConstraintViolation",
            "PropertyConstraintViolation",
        }
        ours_valid = False
    assert ours_valid == (_reference(version, action, broken) is None)
    assert ours_valid == (_ours(cache, version, action, broken) is None)


def test_the_csms_samples_the_fuzzing_starts_from_are_valid() -> None:
    cache = ValidatorCache()
    for version, action, payload in CSMS_SAMPLES:
        assert _reference(version, action, payload) is None, (version, action)
        assert cache.validate(version, action, payload, request=True), (version, action)
