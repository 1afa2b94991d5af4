"""OCPP-J framing: every bad frame gets the CALLERROR the specification prescribes.

The transport is a fake connection (frames in, frames out), so these run without sockets;
tests/collectors/test_ocpp_csms.py runs the same code over real WebSockets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from ocpp.exceptions import NotSupportedError, OCPPError
from ocpp.routing import on

from collectors.ocpp.rpc import FrameError, RpcChargePoint, decode_frame
from collectors.ocpp.schema import ValidatorCache


class FakeConnection:
    """Collects what the charge point sends."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, message: str) -> None:
        self.sent.append(json.loads(message))

    async def recv(self) -> str:  # not used: tests call route_message directly
        raise AssertionError("recv is not used")


def make_station(
    version: str, on_call_error: Callable[[], object] | None = None
) -> tuple[RpcChargePoint, FakeConnection, list[str]]:
    class Station(RpcChargePoint):
        _ocpp_version = version

        @on("Heartbeat")
        def on_heartbeat(self, _payload: dict[str, Any]) -> dict[str, Any]:
            return {"currentTime": "2025-03-01T10:00:00.000Z"}

        @on("StatusNotification")
        def on_status_notification(self, _payload: dict[str, Any]) -> dict[str, Any]:
            raise RuntimeError("handler bug")

    connection = FakeConnection()
    refused: list[str] = []
    station = Station(
        "cs-1",
        connection,
        validators=ValidatorCache(),
        response_timeout_s=0.2,
        on_bad_input=lambda reason, _raw: refused.append(reason),
        on_call_error=on_call_error,
    )
    return station, connection, refused


def route(station: RpcChargePoint, *frames: str) -> None:
    async def _all() -> None:
        for frame in frames:
            await station.route_message(frame)

    asyncio.run(_all())


HEARTBEAT = '[2,"ok-1","Heartbeat",{}]'
SET_VARIABLES_RESULT = (
    '{"setVariableResult":[{"attributeStatus":"Accepted",'
    '"component":{"name":"SampledDataCtrlr"},"variable":{"name":"TxUpdatedInterval"}}]}'
)
SET_VARIABLES = {
    "setVariableData": [
        {
            "attributeValue": "1",
            "component": {"name": "SampledDataCtrlr"},
            "variable": {"name": "TxUpdatedInterval"},
        }
    ]
}


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
@pytest.mark.parametrize(
    ("frame", "unique_id", "code"),
    [
        ("this is not json", "-1", "RpcFrameworkError"),
        ('{"not": "an array"}', "-1", "RpcFrameworkError"),
        ("[2]", "-1", "RpcFrameworkError"),
        ('[2, 17, "Heartbeat", {}]', "-1", "RpcFrameworkError"),  # id must be a string
        ('[2,"m1","Heartbeat"]', "m1", "RpcFrameworkError"),  # payload missing
        ('[2,"m2","Heartbeat",[]]', "m2", "FormatViolation"),  # payload not an object
        ('[9,"m3","Heartbeat",{}]', "m3", "MessageTypeNotSupported"),
        ('[2,"m4","NoSuchAction",{}]', "m4", "NotImplemented"),  # not an OCPP action
        (
            '[2,"m5","Authorize",{"idToken":{"idToken":"a","type":"ISO14443"}}]',
            "m5",
            "NotSupported",
        ),
        ('[2,"m6","Heartbeat",{"unexpected":1}]', "m6", "FormatViolation"),  # schema
        (
            '[2,"m7","StatusNotification",{"timestamp":"2025-03-01T10:00:00Z",'
            '"connectorStatus":"Broken","evseId":1,"connectorId":1}]',
            "m7",
            "PropertyConstraintViolation",  # enum value
        ),
        (
            '[2,"m8","StatusNotification",{"timestamp":"2025-03-01T10:00:00Z",'
            '"connectorStatus":"Available","evseId":"one","connectorId":1}]',
            "m8",
            "TypeConstraintViolation",
        ),
        (
            '[2,"m9","StatusNotification",{"timestamp":"2025-03-01T10:00:00Z",'
            '"connectorStatus":"Available","evseId":1,"connectorId":1}]',
            "m9",
            "InternalError",  # the handler raised
        ),
    ],
)
def test_bad_frame_gets_its_callerror_and_the_session_answers_the_next_call(
    version: str, frame: str, unique_id: str, code: str
) -> None:
    station, connection, _refused = make_station(version)
    route(station, frame, HEARTBEAT)
    error, result = connection.sent
    assert error[0] == 4
    assert error[1] == unique_id
    assert error[2] == code
    assert isinstance(error[3], str)
    assert isinstance(error[4], dict)
    assert result == [3, "ok-1", {"currentTime": "2025-03-01T10:00:00.000Z"}]


def test_missing_required_field_spelling_follows_the_version() -> None:
    frame = '[2,"m1","StatusNotification",{"connectorStatus":"Available","evseId":1}]'
    for version, code in [
        ("2.0.1", "OccurenceConstraintViolation"),
        ("2.1", "OccurrenceConstraintViolation"),
    ]:
        station, connection, _ = make_station(version)
        route(station, frame)
        assert connection.sent[0][2] == code


def test_refused_frames_are_reported_to_the_bad_input_hook() -> None:
    station, _connection, refused = make_station("2.1")
    route(station, "garbage", '[2,"m6","Heartbeat",{"unexpected":1}]', HEARTBEAT)
    assert len(refused) == 2
    assert "RpcFrameworkError" in refused[0]
    assert "FormatViolation" in refused[1]


def test_every_callerror_sent_is_reported_to_the_call_error_hook() -> None:
    counted: list[None] = []
    station, connection, _refused = make_station("2.1", lambda: counted.append(None))
    status = (
        '[2,"m9","StatusNotification",{"timestamp":"2025-03-01T10:00:00Z",'
        '"connectorStatus":"Available","evseId":1,"connectorId":1}]'
    )  # the handler raises: an InternalError the bad-input hook does not see
    route(station, "garbage", '[2,"m4","NoSuchAction",{}]', status, HEARTBEAT)
    assert [frame[0] for frame in connection.sent] == [4, 4, 4, 3]
    assert len(counted) == 3


def test_an_ocpp21_send_frame_is_never_answered() -> None:
    station, connection, refused = make_station("2.1")
    route(station, '[6,"s1","NotifyPeriodicEventStream",{"id":1,"pending":0,"basetime":"x"}]')
    assert connection.sent == []
    assert refused  # counted and dead-lettered, not silently lost


def test_send_frame_is_an_unsupported_message_type_on_201() -> None:
    station, connection, _ = make_station("2.0.1")
    route(station, '[6,"s1","NotifyPeriodicEventStream",{}]')
    assert connection.sent[0][:3] == [4, "s1", "MessageTypeNotSupported"]


def test_decode_frame_returns_typed_messages() -> None:
    call = decode_frame('[2,"a","Heartbeat",{}]', "2.1")
    result = decode_frame('[3,"a",{"currentTime":"x"}]', "2.1")
    error = decode_frame('[4,"a","NotSupported","no",{}]', "2.1")
    assert call is not None and call.action == "Heartbeat"
    assert result is not None and result.payload == {"currentTime": "x"}
    assert error is not None and error.error_code == "NotSupported"


def test_decode_frame_error_carries_the_callerror() -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(b"\xff\xfe", "2.0.1")
    assert info.value.call_error().to_json().startswith('[4,"-1","RpcFrameworkError"')


def test_call_payload_returns_the_answer_and_raises_a_callerror() -> None:
    station, connection, _ = make_station("2.1")

    async def scenario() -> tuple[dict[str, Any], OCPPError | None]:
        async def answer(reply: str) -> None:
            for _ in range(1000):
                if connection.sent:
                    break
                await asyncio.sleep(0)
            unique_id = connection.sent[-1][1]
            connection.sent.clear()
            await station.route_message(reply.replace("ID", unique_id))

        request = SET_VARIABLES
        ok_task = asyncio.ensure_future(station.call_payload("SetVariables", request))
        await answer(f'[3,"ID",{SET_VARIABLES_RESULT}]')
        ok = await ok_task
        bad_task = asyncio.ensure_future(station.call_payload("SetVariables", request))
        await answer('[4,"ID","NotSupported","not here",{}]')
        try:
            await bad_task
        except OCPPError as exc:
            return ok, exc
        return ok, None

    ok, error = asyncio.run(scenario())
    assert ok == json.loads(SET_VARIABLES_RESULT)
    assert isinstance(error, NotSupportedError)


def test_call_payload_times_out_when_the_station_does_not_answer() -> None:
    station, _connection, _ = make_station("2.1")
    with pytest.raises(TimeoutError):
        asyncio.run(station.call_payload("SetVariables", SET_VARIABLES))
