"""OCPP-J framing for the CSMS: frames in, CALLRESULT or the prescribed CALLERROR out.

The stock ``ocpp.ChargePoint`` (2.1.0) answers nothing to a frame it cannot parse, sends no
reply to an unknown action on OCPP 2.1, swaps NotImplemented and NotSupported relative to
the specification, validates with ``jsonschema`` in a thread pool (~1.3 ms per meter value)
and converts every key to snake_case with regular expressions (~0.5 ms per meter value).
``RpcChargePoint`` keeps the library's CALL machinery (``call()``, the
response queue, the response timeout, the ``@on``/``@after`` route map) and replaces the
receive side:

- a frame that is not JSON, not an array, or has no readable message id gets
  ``RpcFrameworkError`` with message id ``"-1"`` when the id cannot be read;
- an unknown message type number gets ``MessageTypeNotSupported``; an OCPP 2.1 ``SEND``
  (type 6) is never answered, as the specification requires;
- an action the OCPP version does not define gets ``NotImplemented``, a defined action
  without a handler ``NotSupported`` (OCPP-J 2.0.1/2.1, section 4.3);
- a payload that breaks the action's JSON schema gets the matching constraint violation
  (``collectors.ocpp.schema``); a handler that raises gets ``InternalError``;
- a CALLRESULT or CALLERROR that answers no CALL of ours (unknown id, or too late) is
  refused as bad input and never queued (the library logged each at ERROR level).

In every case the connection stays up. Handlers registered with ``@on(action)`` receive the
validated wire payload as one camelCase ``dict`` (as in the specification) and return the
response payload as a ``dict``.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ocpp.charge_point import ChargePoint
from ocpp.exceptions import (
    FormatViolationError,
    InternalError,
    NotImplementedError,
    NotSupportedError,
    OCPPError,
    UnknownCallErrorCodeError,
)
from ocpp.messages import Call, CallError, CallResult, MessageType
from ocpp.v21.enums import Action as Action21
from ocpp.v201.enums import Action as Action201

from collectors.ocpp.schema import ValidatorCache
from gridflex import jsonio

__all__ = [
    "BadInputHook",
    "FrameError",
    "MessageTypeNotSupportedError",
    "RpcChargePoint",
    "RpcFrameworkError",
    "decode_frame",
]

log = logging.getLogger(__name__)

_SEND = 6  # OCPP 2.1: unconfirmed message, never answered
_CALLRESULTERROR = 5  # OCPP 2.1: an error about a CALLRESULT, never answered

_KNOWN_ACTIONS: dict[str, frozenset[str]] = {
    "2.0.1": frozenset(a.value for a in Action201),
    "2.1": frozenset(a.value for a in Action21),
}

_JSON = json.JSONEncoder(separators=(",", ":"))
"""Frames as ``ocpp.messages`` writes them (compact, ASCII), without a new encoder each."""

BadInputHook = Callable[[str, str], None]
"""Called with ``(reason, raw_frame)`` for every frame refused with a CALLERROR."""


class RpcFrameworkError(OCPPError):
    """OCPP-J: the content of the call is not a valid RPC request (e.g. no message id)."""

    code = "RpcFrameworkError"
    default_description = "Content of the call is not a valid RPC Request"


class MessageTypeNotSupportedError(OCPPError):
    """OCPP-J: a message type number this implementation does not support."""

    code = "MessageTypeNotSupported"
    default_description = "A message with a Message Type Number that is not supported"


@dataclass
class FrameError(Exception):
    """A frame that cannot be routed; answer it with ``error`` under ``unique_id``."""

    unique_id: str
    error: OCPPError

    def __str__(self) -> str:
        cause = self.error.details.get("cause") if self.error.details else None
        return f"{self.error.code}: {cause or self.error.description}"

    def call_error(self) -> CallError:
        """The CALLERROR frame to send back."""
        return CallError(
            self.unique_id, self.error.code, self.error.description, self.error.details
        )


def _frame_error(unique_id: str, error_cls: type[OCPPError], cause: str) -> FrameError:
    return FrameError(unique_id, error_cls(details={"cause": cause}))


def decode_frame(raw: str | bytes, ocpp_version: str) -> Call | CallResult | CallError | None:
    """Decode one OCPP-J frame; None for a frame that must not be answered (2.1 SEND).

    Raises ``FrameError`` carrying the CALLERROR to answer with.
    """
    try:
        frame = jsonio.loads(raw)
    except ValueError:
        raise _frame_error("-1", RpcFrameworkError, "the frame is not valid JSON") from None
    if not isinstance(frame, list) or len(frame) < 2:
        raise _frame_error("-1", RpcFrameworkError, "the frame is not an array of 3 to 5 items")
    type_id, unique_id = frame[0], frame[1]
    if not isinstance(unique_id, str) or not unique_id or len(unique_id) > 36:
        raise _frame_error("-1", RpcFrameworkError, "the message id is not a string of 1-36")
    if type_id == MessageType.Call:
        if len(frame) != 4 or not isinstance(frame[2], str):
            raise _frame_error(unique_id, RpcFrameworkError, "a CALL is [2, id, action, payload]")
        if not isinstance(frame[3], dict):
            raise _frame_error(unique_id, FormatViolationError, "the payload is not an object")
        return Call(unique_id, frame[2], frame[3])
    if type_id == MessageType.CallResult:
        if len(frame) != 3:
            raise _frame_error(unique_id, RpcFrameworkError, "a CALLRESULT is [3, id, payload]")
        return CallResult(unique_id, frame[2])
    if type_id == MessageType.CallError:
        if len(frame) != 5:
            raise _frame_error(
                unique_id, RpcFrameworkError, "a CALLERROR is [4, id, code, text, details]"
            )
        return CallError(unique_id, frame[2], frame[3], frame[4])
    if ocpp_version == "2.1" and type_id in (_SEND, _CALLRESULTERROR):
        return None
    raise _frame_error(
        unique_id, MessageTypeNotSupportedError, f"message type {type_id!r:.40} is not supported"
    )


def _ignore_bad_input(_reason: str, _raw: str) -> None:
    return None


class RpcChargePoint(ChargePoint):
    """``ocpp.ChargePoint`` with the receive side described in the module docstring.

    Subclasses set ``_ocpp_version``, ``_call`` and ``_call_result`` (as
    ``ocpp.v201.ChargePoint`` / ``ocpp.v21.ChargePoint`` do) and register handlers with
    ``@on(action)`` taking and returning wire (camelCase) dicts.
    """

    _ocpp_version: str

    def __init__(
        self,
        station_id: str,
        connection: Any,
        *,
        validators: ValidatorCache,
        response_timeout_s: float = 30.0,
        on_bad_input: BadInputHook = _ignore_bad_input,
        frames: Iterator[int] | None = None,
        on_call_error: Callable[[], object] | None = None,
    ) -> None:
        super().__init__(station_id, connection, response_timeout=response_timeout_s, logger=log)
        self._validators = validators
        self._on_bad_input = on_bad_input
        self._after_tasks: set[asyncio.Task[Any]] = set()
        self._frames = frames if frames is not None else itertools.count(1)
        #: Called for every CALLERROR this side sends (the CSMS counts them).
        self._on_call_error = on_call_error
        #: Number of the frame being routed (from ``frames``: increasing across sessions
        #: that share the counter), so handlers can tell what arrived after an answer.
        self.frame_no = 0
        self._answer_frames: dict[str, int] = {}

    async def start(self) -> None:
        """Route every frame until the connection closes (raises ``ConnectionClosed``)."""
        while True:
            message = await self._connection.recv()
            log.debug("%s: received %s", self.id, message)
            await self.route_message(message)

    async def _send(self, message: str) -> None:
        log.debug("%s: send %s", self.id, message)
        await self._connection.send(message)

    async def _send_call_error(self, message: str) -> None:
        if self._on_call_error is not None:
            self._on_call_error()
        await self._send(message)

    async def route_message(self, raw_msg: str | bytes) -> None:
        """Answer one frame (see the module docstring); never raises for bad input."""
        self.frame_no = next(self._frames)
        try:
            msg = decode_frame(raw_msg, self._ocpp_version)
        except FrameError as exc:
            self._refused(str(exc), raw_msg)
            await self._send_call_error(exc.call_error().to_json())
            return
        if msg is None:
            self._refused("OCPP 2.1 SEND/CALLRESULTERROR frames are not handled", raw_msg)
        elif isinstance(msg, Call):
            await self._handle_call(msg)
        elif msg.unique_id not in self._answer_frames:  # no CALL of ours waits for it
            self._refused(f"an answer to no pending CALL ({msg.unique_id!r:.40})", raw_msg)
        else:
            self._answer_frames[msg.unique_id] = self.frame_no
            self._response_queue.put_nowait(msg)

    def _refused(self, reason: str, raw: str | bytes) -> None:
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        self._on_bad_input(reason, text)

    async def _handle_call(self, msg: Call) -> None:
        handlers = self.route_map.get(msg.action, {})
        handler = handlers.get("_on_action")
        try:
            if handler is None:
                if msg.action in _KNOWN_ACTIONS.get(self._ocpp_version, frozenset()):
                    raise NotSupportedError(
                        details={"cause": f"{msg.action} is not supported by this CSMS"}
                    )
                raise NotImplementedError(
                    details={"cause": f"{msg.action} is not an OCPP {self._ocpp_version} action"}
                )
            self._validators.validate(self._ocpp_version, msg.action, msg.payload, request=True)
        except OCPPError as error:
            self._refused(f"{error.code}: {error.details.get('cause', '')}", msg.to_json())
            await self._send_call_error(msg.create_call_error(error).to_json())
            return

        try:
            response = handler(msg.payload)
            if inspect.isawaitable(response):
                response = await response
            self._validators.validate(self._ocpp_version, msg.action, response, request=False)
            frame = _JSON.encode([MessageType.CallResult, msg.unique_id, response])
        except OCPPError as error:
            log.exception("%s: %s handler or response failed", self.id, msg.action)
            await self._send_call_error(msg.create_call_error(error).to_json())
            return
        except Exception:
            log.exception("%s: %s handler failed", self.id, msg.action)
            await self._send_call_error(msg.create_call_error(InternalError()).to_json())
            return
        await self._send(frame)

        after = handlers.get("_after_action")
        if after is not None:
            result = after(msg.payload)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._after_tasks.add(task)
                task.add_done_callback(self._after_done)

    def _after_done(self, task: asyncio.Task[Any]) -> None:
        self._after_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: post-response task failed: %r", self.id, task.exception())

    async def call_payload(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a CALL with a wire (camelCase) payload and return the response payload.

        Uses the library's call lock (one outstanding CALL per connection, as OCPP-J
        requires) and response queue. Raises ``asyncio.TimeoutError`` after the response
        timeout, and the matching ``OCPPError`` when the station answers with a CALLERROR.
        """
        result, _frame_no = await self.call_numbered(action, payload)
        return result

    async def call_numbered(
        self, action: str, payload: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        """``call_payload``, also returning the ``frame_no`` of the station's answer.

        Frames routed later have higher numbers: what the station sent after answering.
        """
        self._validators.validate(self._ocpp_version, action, payload, request=True)
        call = Call(str(uuid.uuid4()), action, payload)
        self._answer_frames[call.unique_id] = 0
        try:
            async with self._call_lock:
                await self._send(call.to_json())
                response = await self._get_specific_response(call.unique_id, self._response_timeout)
        finally:
            answer_frame = self._answer_frames.pop(call.unique_id, 0)
        if isinstance(response, CallError):
            try:
                raise response.to_exception()
            except UnknownCallErrorCodeError:
                raise InternalError(
                    description=f"unknown CALLERROR code {response.error_code!r}",
                    details={"cause": response.error_description},
                ) from None
        result: dict[str, Any] = response.payload
        try:
            self._validators.validate(self._ocpp_version, action, result, request=False)
        except OCPPError as error:
            log.warning("%s: %s response breaks the schema: %s", self.id, action, error)
            raise
        return result, answer_frame
