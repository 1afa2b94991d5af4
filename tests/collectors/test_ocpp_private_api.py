"""Every private attribute, module path and file layout of the ``ocpp`` package gridflex uses.

``pyproject.toml`` pins ``ocpp`` to one version. When a new release is taken and a test here
fails, the release changed something gridflex reaches past the public API for; update the
user named in the failure message, then the pin:

- ``collectors/ocpp/rpc.py`` (``RpcChargePoint``): ``ChargePoint.__init__`` and its
  ``_connection``, ``_response_timeout``, ``_call_lock``, ``_response_queue``,
  ``_get_specific_response``, ``route_map`` with the ``_on_action``/``_after_action`` keys;
- ``collectors/ocpp/csms.py``: ``_connection`` of a replaced session (closed);
- ``collectors/ocpp/schema.py``: the schema files under ``<package>/v201|v21/schemas``;
- ``simulators/charger/station.py``: ``_unique_id_generator`` (used by ``call()``),
  ``_send`` (called by ``call()``), ``_call``/``_call_result`` of ``ocpp.v201``/``ocpp.v21``
  ``ChargePoint``, ``_call_lock``, ``_response_timeout``, ``_connection``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import ocpp
import ocpp.v21
import ocpp.v201
import pytest
from ocpp.charge_point import ChargePoint
from ocpp.messages import CallResult, MessageType
from ocpp.routing import after, on
from ocpp.v21.enums import Action as Action21
from ocpp.v201.enums import Action as Action201

from collectors.ocpp.schema import SCHEMA_DIRS, ValidatorCache, schema_path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(ocpp.__file__).parent


def _update(what: str, user: str) -> str:
    return (
        f"ocpp {version('ocpp')} changed {what}: update {user} and the ocpp pin in "
        "pyproject.toml (see tests/collectors/test_ocpp_private_api.py)"
    )


class _Connection:
    """A WebSocket stand-in: records what is sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, message: str) -> None:
        self.sent.append(message)

    async def recv(self) -> str:  # pragma: no cover - never awaited here
        raise AssertionError("not used")


def test_installed_ocpp_is_the_version_pyproject_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins = [d for d in project["project"]["dependencies"] if re.match(r"ocpp\b", d)]
    assert len(pins) == 1
    match = re.fullmatch(r"ocpp==([\w.]+)", pins[0].replace(" ", ""))
    assert match, f"pyproject.toml must pin ocpp to one version (==), not {pins[0]!r}"
    assert version("ocpp") == match.group(1), "run `uv sync`: the venv's ocpp is not the pin"


@pytest.mark.parametrize(("ocpp_version", "actions"), [("2.0.1", Action201), ("2.1", Action21)])
def test_schema_files_are_where_the_validator_cache_looks(ocpp_version: str, actions: Any) -> None:
    folder = PACKAGE / SCHEMA_DIRS[ocpp_version] / "schemas"
    assert folder.is_dir(), _update(f"the schema folder {folder}", "collectors/ocpp/schema.py")
    missing = [
        f"{action.value}{suffix}"
        for action in actions
        for suffix, request in (("Request", True), ("Response", False))
        if not (path := schema_path(PACKAGE, ocpp_version, action.value, request=request))
        or not path.is_file()
    ]
    assert not missing, _update(f"the schema file names ({missing[:3]}...)", "schema.py")
    document = json.loads((folder / "TransactionEventRequest.json").read_text(encoding="utf-8-sig"))
    assert "definitions" in document, _update("the schema layout", "schema.py (inline_refs)")
    assert ValidatorCache().get(ocpp_version, "TransactionEvent", request=True) is not None


def test_charge_point_init_sets_the_attributes_rpc_and_the_simulator_use() -> None:
    connection = _Connection()
    logger = logging.getLogger("test_ocpp_private_api")
    cp = ChargePoint("st-1", connection, response_timeout=7, logger=logger)
    user = "collectors/ocpp/rpc.py and simulators/charger/station.py"
    assert cp.id == "st-1"
    assert cp.logger is logger, _update("ChargePoint.__init__'s logger", user)
    assert cp._connection is connection, _update("ChargePoint._connection", user)
    assert cp._response_timeout == 7, _update("ChargePoint._response_timeout", user)
    assert isinstance(cp._call_lock, asyncio.Lock), _update("ChargePoint._call_lock", user)
    assert isinstance(cp._response_queue, asyncio.Queue), _update("_response_queue", user)
    assert isinstance(cp.route_map, dict), _update("ChargePoint.route_map", user)
    assert callable(cp._unique_id_generator), _update("_unique_id_generator", user)


@pytest.mark.parametrize(
    ("cls", "package", "ocpp_version"),
    [(ocpp.v201.ChargePoint, ocpp.v201, "2.0.1"), (ocpp.v21.ChargePoint, ocpp.v21, "2.1")],
)
def test_versioned_charge_points_carry_their_call_modules_and_version(
    cls: Any, package: Any, ocpp_version: str
) -> None:
    user = "simulators/charger/station.py (cp._call.X(...)) and collectors/ocpp/session.py"
    assert cls._call is package.call, _update(f"{cls.__module__}.ChargePoint._call", user)
    assert cls._call_result is package.call_result, _update("ChargePoint._call_result", user)
    assert cls._ocpp_version == ocpp_version, _update("ChargePoint._ocpp_version", user)
    for name in ("BootNotification", "StatusNotification", "NotifyEVChargingNeeds", "NotifyEvent"):
        assert hasattr(package.call, name), _update(f"call.{name}", user)
    assert hasattr(package.call_result, "ClearChargingProfile"), _update("call_result", user)


def test_on_and_after_register_under_the_keys_rpc_reads() -> None:
    class Station(ocpp.v21.ChargePoint):
        @on("Heartbeat")
        def on_heartbeat(self) -> None:
            return None

        @after("Heartbeat")
        def after_heartbeat(self) -> None:
            return None

    handlers = Station("st-1", _Connection()).route_map["Heartbeat"]
    user = "collectors/ocpp/rpc.py (RpcChargePoint._handle_call)"
    assert handlers.get("_on_action").__name__ == "on_heartbeat", _update("_on_action", user)
    assert handlers.get("_after_action").__name__ == "after_heartbeat", _update(
        "_after_action", user
    )


def test_get_specific_response_returns_the_matching_answer_from_the_response_queue() -> None:
    user = "collectors/ocpp/rpc.py (call_numbered, route_message)"
    params = list(inspect.signature(ChargePoint._get_specific_response).parameters)
    assert params == ["self", "unique_id", "timeout"], _update("_get_specific_response", user)

    async def scenario() -> tuple[Any, bool]:
        cp = ocpp.v201.ChargePoint("st-1", _Connection())
        cp._response_queue.put_nowait(CallResult("other", {}))
        cp._response_queue.put_nowait(CallResult("mine", {"status": "Accepted"}))
        answer = await cp._get_specific_response("mine", 5)
        try:
            await cp._get_specific_response("never", 0.01)
        except TimeoutError:
            timed_out = True
        else:
            timed_out = False
        return answer, timed_out

    answer, timed_out = asyncio.run(scenario())
    assert isinstance(answer, CallResult), _update("_get_specific_response", user)
    assert answer.payload == {"status": "Accepted"}, _update("_get_specific_response", user)
    assert timed_out, _update("_get_specific_response's timeout", user)


def test_call_takes_its_id_from_the_generator_and_sends_through_send() -> None:
    user = "simulators/charger/station.py (_unique_id_generator, _send)"

    class Station(ocpp.v201.ChargePoint):
        sent_via_send: list[str]

        async def _send(self, message: str) -> None:
            self.sent_via_send.append(message)
            unique_id = json.loads(message)[1]
            await self.route_message(
                json.dumps(
                    [MessageType.CallResult, unique_id, {"currentTime": "2025-01-01T00:00:00Z"}]
                )
            )

    async def scenario() -> tuple[list[str], Any]:
        cp = Station("st-1", _Connection(), response_timeout=5)
        cp.sent_via_send = []
        cp._unique_id_generator = lambda: "sim-1"
        result = await cp.call(ocpp.v201.call.Heartbeat(), suppress=False)
        return cp.sent_via_send, result

    sent, result = asyncio.run(scenario())
    assert len(sent) == 1, _update("ChargePoint.call() no longer sends with _send", user)
    assert json.loads(sent[0])[:3] == [2, "sim-1", "Heartbeat"], _update(
        "ChargePoint.call()'s use of _unique_id_generator", user
    )
    assert result.current_time == "2025-01-01T00:00:00Z"
