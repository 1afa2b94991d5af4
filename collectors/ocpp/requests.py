"""Requests from ``gridflex control`` to the CSMS over MQTT, and the CSMS's answers.

``gridflex control`` runs in another process than the CSMS, which owns the stations'
WebSocket connections. Control publishes one ``csms-setpoint/1`` per request on
``gridflex/v1/{site}/csms/{asset}/setpoint`` (QoS 1, not retained); :class:`RequestServer`
executes it on the CSMS (``set_power``, ``set_local_frequency``, ``clear_profiles``) and
publishes ``csms-result/1`` on ``…/csms/{asset}/result``: first the station's answer
(``phase`` ``answer``), then, for an accepted profile, the power of the station's next
meter value after that answer (``phase`` ``readback``; ``measured_w`` absent when none came
within twice the meter interval).

Rules:

- Idempotent: the ``request_id`` (control's ``command_id``) of an asset is executed once; a
  repeat, also while the first is still running, is answered again with the same messages
  (bounded LRU of recent ids). Only outcomes that reached the station (accepted, rejected)
  and refusals are kept: after ``timeout``, ``offline`` or ``error`` the same id may be
  tried again, which is safe because setpoints are absolute.
- A request received after its ``valid_until_ms`` is refused (``expired``), not executed.
- A payload that is not a valid request for this site goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, Literal, Protocol

from collectors.ocpp.csms import COMPONENT, Csms, SetpointResult
from gridflex.contract import (
    DEAD_LETTER_LIMIT,
    PREFIX,
    ContractError,
    CsmsRequest,
    CsmsResult,
    DeadLetter,
    csms_request_topic,
    csms_result_topic,
    deadletter_topic,
    parse_payload,
)
from gridflex.runtime import cancel_and_wait

__all__ = ["DEFAULT_LRU_SIZE", "RequestServer", "Subscriber", "request_filter"]

log = logging.getLogger(__name__)

#: Recent request ids kept for idempotency (per CSMS, all assets together).
DEFAULT_LRU_SIZE = 4096

_NOT_KEPT = frozenset({"timeout", "offline", "error"})


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Subscriber(Protocol):
    """An MQTT client that publishes and subscribes (``AsyncMqttClient`` or ``MqttClient``)."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """Queue one message; False when it was dropped."""
        ...

    def subscribe(
        self, topic_filter: str, callback: Callable[[str, bytes], None], qos: int = 1
    ) -> None:
        """Subscribe (again after every reconnect); the callback gets topic and payload."""
        ...


def request_filter(site_id: str) -> str:
    """``gridflex/v1/{site}/csms/+/setpoint``: control's requests for every EVSE."""
    return f"{PREFIX}/{site_id}/csms/+/setpoint"


class RequestServer:
    """Executes control's requests on the CSMS and answers them (module docstring).

    ``start()`` must be called on the CSMS's event loop; MQTT callbacks may arrive on
    another thread (paho) and are handed over to that loop.
    """

    def __init__(
        self,
        csms: Csms,
        mqtt: Subscriber,
        *,
        now_ms: Callable[[], int] = _now_ms,
        lru_size: int = DEFAULT_LRU_SIZE,
        foreign: frozenset[str] = frozenset(),
    ) -> None:
        self.csms = csms
        #: EVSEs of the site that another CSMS shard owns: their requests are its to answer.
        self.foreign = foreign
        self.mqtt = mqtt
        self.site_id = csms.settings.site_id
        self.now_ms = now_ms
        self.lru_size = lru_size
        self.executed = 0
        self.repeated = 0
        self._recent: OrderedDict[tuple[str, str], asyncio.Future[list[bytes]]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Subscribe to the requests of this site (call on the CSMS's loop)."""
        self._loop = asyncio.get_running_loop()
        self.mqtt.subscribe(request_filter(self.site_id), self._on_message, qos=1)

    async def stop(self) -> None:
        """Cancel the requests still running."""
        await cancel_and_wait(self._tasks, log)

    def _on_message(self, topic: str, payload: bytes) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self.handle, topic, payload)

    def handle(self, topic: str, payload: bytes) -> None:
        """Take one request message (on the loop): execute, repeat the answer, or refuse."""
        try:
            request = parse_payload(payload)
        except ContractError as exc:
            self._dead_letter(topic, payload, str(exc))
            return
        if not isinstance(request, CsmsRequest):
            self._dead_letter(
                topic, payload, f"expected csms-setpoint/1, got {type(request).__name__}"
            )
            return
        if request.site != self.site_id or topic != csms_request_topic(self.site_id, request.asset):
            self._dead_letter(topic, payload, "request for another site or asset than its topic")
            return
        if request.asset in self.foreign:
            log.debug("request %s for %s: another shard's", request.request_id, request.asset)
            return
        key = (request.asset, request.request_id)
        known = self._recent.get(key)
        if known is not None:
            self._recent.move_to_end(key)
            self.repeated += 1
            self._spawn(self._repeat(request.asset, known))
            return
        now = self.now_ms()
        if now > request.valid_until_ms:
            reason = f"expired: valid until {request.valid_until_ms}, now {now}"
            self._publish(self._answer(request, "refused", reason))
            return
        future: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        self._recent[key] = future
        self._trim()
        self._spawn(self._execute(request, key, future))

    def _trim(self) -> None:
        while len(self._recent) > self.lru_size:
            oldest, future = next(iter(self._recent.items()))
            if not future.done():
                break
            del self._recent[oldest]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _repeat(self, asset: str, known: asyncio.Future[list[bytes]]) -> None:
        topic = csms_result_topic(self.site_id, asset)
        for payload in await asyncio.shield(known):
            self._publish_raw(topic, payload)

    async def _execute(
        self,
        request: CsmsRequest,
        key: tuple[str, str],
        future: asyncio.Future[list[bytes]],
    ) -> None:
        sent: list[bytes] = []
        try:
            self.executed += 1
            result = await self._run(request)
            answer = self._answer_of(request, result)
            sent.append(self._publish(answer))
            if result.accepted and request.kind != "clear":
                measured = await self.csms.measured_after(result)
                readback = answer.model_copy(
                    update={
                        "phase": "readback",
                        "ts_ms": self.now_ms(),
                        "measured_w": None if measured is None else measured.power_w,
                        "measured_ms": None if measured is None else measured.ts_ms,
                    }
                )
                sent.append(self._publish(readback))
            if result.status in _NOT_KEPT:
                self._recent.pop(key, None)
        except BaseException:
            self._recent.pop(key, None)
            raise
        finally:
            if not future.done():
                future.set_result(sent)

    async def _run(self, request: CsmsRequest) -> SetpointResult:
        csms = self.csms
        if request.kind == "setpoint":
            assert request.power_w is not None
            return await csms.set_power(
                request.asset, request.power_w, valid_to_ms=request.hold_until_ms
            )
        if request.kind == "local_frequency":
            assert request.curve is not None
            return await csms.set_local_frequency(
                request.asset,
                [(p.freq_hz, p.power_w) for p in request.curve],
                baseline_w=request.power_w or 0.0,
                valid_to_ms=request.hold_until_ms,
            )
        return await csms.clear_profiles(request.asset)

    def _answer_of(self, request: CsmsRequest, result: SetpointResult) -> CsmsResult:
        return CsmsResult(
            site=self.site_id,
            asset=request.asset,
            ts_ms=self.now_ms(),
            request_id=request.request_id,
            kind=request.kind,
            phase="answer",
            status=result.status,
            reason=result.reason,
            requested_w=request.power_w,
            sent_w=result.sent_w,
            operation_mode=result.operation_mode,
            purpose=result.purpose,
            ocpp_version=result.ocpp_version,
            station_id=result.station_id or None,
            evse_id=result.evse_id,
            answered_ms=result.answered_ms,
        )

    def _answer(self, request: CsmsRequest, status: Literal["refused"], reason: str) -> CsmsResult:
        return CsmsResult(
            site=self.site_id,
            asset=request.asset,
            ts_ms=self.now_ms(),
            request_id=request.request_id,
            kind=request.kind,
            phase="answer",
            status=status,
            reason=reason,
            requested_w=request.power_w,
        )

    def _publish(self, result: CsmsResult) -> bytes:
        payload = result.to_json()
        self._publish_raw(csms_result_topic(self.site_id, result.asset), payload)
        return payload

    def _publish_raw(self, topic: str, payload: bytes) -> None:
        self.mqtt.publish(topic, payload, qos=1, retain=False)

    def _dead_letter(self, topic: str, payload: bytes, reason: str) -> None:
        log.warning("csms: refused a request on %s: %s", topic, reason)
        letter = DeadLetter.of(
            payload,
            site=self.site_id,
            component=COMPONENT,
            ts_ms=self.now_ms(),
            reason=reason,
            topic=topic,
            limit=DEAD_LETTER_LIMIT,
        )
        self.mqtt.publish(deadletter_topic(COMPONENT), letter.to_json(), qos=1)
