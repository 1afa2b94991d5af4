"""The OCPP side of a simulated station: the ``ocpp`` library's ``ChargePoint`` with its handlers.

``SimChargePoint201``/``SimChargePoint21`` answer SetVariables, SetChargingProfile and
ClearChargingProfile by asking their ``SimStation`` (``simulators.charger.station``), and
add ``call_wire``, the hot-path CALL that skips the library's per-call task and encoder.
They use attributes of ``ocpp.charge_point.ChargePoint`` that are not public API
(``_connection``, ``_call_lock``, ``_unique_id_generator``, ``_response_timeout``); the
``ocpp`` version is pinned for that reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ocpp.messages import CallError, MessageType
from ocpp.routing import on
from ocpp.v21 import ChargePoint as ChargePoint21
from ocpp.v201 import ChargePoint as ChargePoint201

from simulators.charger.wire import FRAME_ENCODER, answer_frame

if TYPE_CHECKING:
    from simulators.charger.station import SimStation

__all__ = ["SimChargePoint21", "SimChargePoint201", "SimHandlers"]

log = logging.getLogger(__name__)


class SimHandlers:
    """OCPP handlers of a simulated station (library style: snake_case keyword arguments)."""

    station: SimStation
    _call_result: Any
    _awaiting: tuple[str, asyncio.Future[list[Any]]] | None = None

    @on("SetVariables")
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_kw: Any) -> Any:
        """Apply each variable and answer its status."""
        results = [self.station.set_variable(item) for item in set_variable_data]
        return self._call_result.SetVariables(set_variable_result=results)

    @on("SetChargingProfile")
    def on_set_charging_profile(
        self, evse_id: int, charging_profile: dict[str, Any], **_kw: Any
    ) -> Any:
        """Apply a charging profile to an EVSE (0: the station)."""
        status, reason = self.station.apply_profile(evse_id, charging_profile)
        info = {"reason_code": reason} if reason else None
        return self._call_result.SetChargingProfile(status=status, status_info=info)

    @on("ClearChargingProfile")
    def on_clear_charging_profile(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
        **_kw: Any,
    ) -> Any:
        """Drop profiles by id or criteria: the car falls back to what is left."""
        status = self.station.clear_profiles(charging_profile_id, charging_profile_criteria)
        return self._call_result.ClearChargingProfile(status=status)

    async def start(self) -> None:
        """Receive and route frames (the library logs every frame at INFO; here DEBUG)."""
        while True:
            message = await self._connection.recv()  # type: ignore[attr-defined]
            log.debug("%s: received %s", self.station.spec.station_id, message)
            await self.route_message(message)

    async def _send(self, message: str) -> None:
        log.debug("%s: send %s", self.station.spec.station_id, message)
        await self._connection.send(message)  # type: ignore[attr-defined]

    async def call_wire(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send a wire-format CALL and return the answer's payload (the hot path).

        One CALL at a time per connection (the library's call lock, as OCPP-J requires).
        The answer is matched by its message id in ``route_message`` and handed over in a
        future: the library's response queue costs a task per call (``wait_for``), and its
        ``Call.to_json`` a new JSON encoder per frame.
        """
        unique_id = self._unique_id_generator()  # type: ignore[attr-defined]
        frame = FRAME_ENCODER.encode([MessageType.Call, unique_id, action, payload])
        async with self._call_lock:  # type: ignore[attr-defined]
            answer: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._awaiting = (unique_id, answer)
            try:
                await self._send(frame)
                async with asyncio.timeout(self._response_timeout):  # type: ignore[attr-defined]
                    response = await answer
            finally:
                self._awaiting = None
        if response[0] == MessageType.CallError:
            raise CallError(*response[1:]).to_exception()
        result: dict[str, Any] = response[2]
        return result

    async def route_message(self, raw_msg: str) -> None:
        """Hand the answer to ``call_wire``'s CALL over; ignore CALLs while hung; else route.

        Everything else is routed as the library does (its handlers, its response queue for
        the CALLs sent with ``call()``).
        """
        awaiting = self._awaiting
        if awaiting is not None and raw_msg.lstrip()[1:2] in ("3", "4"):
            frame = answer_frame(raw_msg, awaiting[0])
            if frame is not None:
                if not awaiting[1].done():
                    awaiting[1].set_result(frame)
                return
        if self.station.hung and raw_msg.lstrip().startswith("[2"):
            self.station.counters.calls_ignored += 1
            return
        await super().route_message(raw_msg)  # type: ignore[misc]


class SimChargePoint201(SimHandlers, ChargePoint201):
    """A simulated OCPP 2.0.1 station."""


class SimChargePoint21(SimHandlers, ChargePoint21):
    """A simulated OCPP 2.1 station."""
