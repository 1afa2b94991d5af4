"""Charging profiles to the stations' EVSEs, and the read-back after them.

The part of the CSMS (``collectors.ocpp.csms.Csms`` inherits it) that carries setpoints to
the stations: which profile is decided in ``control.ocpp_plan`` (every device write lives
in ``control/``); here it is sent on the station's connection and its answer turned into a
``SetpointResult``. ``measured_after`` is the read-back: the power of the first meter value
the EVSE sent after answering (frames are numbered in arrival order, so a meter value that
was on its way before the answer does not count).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from ocpp.exceptions import OCPPError
from websockets.exceptions import ConnectionClosed

from collectors.ocpp.mapping import format_ocpp_time
from collectors.ocpp.session import EvseState, MeasuredPower, StationSession
from collectors.ocpp.settings import CsmsSettings, aligned_interval_s
from control.ocpp_plan import (
    ChargingProfilePlan,
    Refusal,
    StationFacts,
    clear_requests,
    plan_local_frequency,
    plan_setpoint,
    plan_station_max,
)
from gridflex.contract import CsmsStatus

__all__ = ["ChargingProfiles", "SetpointResult"]

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class SetpointResult:
    """What happened to one charging-profile request to one EVSE.

    ``status``: ``accepted`` / ``rejected`` (the station's answer), ``refused`` (not sent:
    see ``reason``), ``timeout`` (no answer within the response timeout), ``offline`` (not
    connected) or ``error`` (a CALLERROR or an invalid answer). ``answered_ms`` is when the
    station's answer arrived and ``answer_frame`` its frame number (for the read-back).
    """

    station_id: str
    requested_w: float | None
    status: CsmsStatus
    reason: str | None = None
    sent_w: float | None = None
    operation_mode: str | None = None
    ocpp_version: str | None = None
    asset_id: str | None = None
    evse_id: int | None = None
    purpose: str | None = None
    answered_ms: int | None = None
    answer_frame: int | None = None

    @property
    def accepted(self) -> bool:
        """Whether the station accepted the request."""
        return self.status == "accepted"


class _Counters(Protocol):
    profiles_sent: int


class ChargingProfiles:
    """Setpoints, LocalFrequency and station-wide limits as charging profiles (mixin).

    Needs the CSMS's ``settings``, ``stats.profiles_sent``, its EVSEs by asset
    (``_evses``) and its sessions by station (``_sessions``).
    """

    settings: CsmsSettings
    stats: _Counters
    _evses: dict[str, EvseState]
    _sessions: dict[str, StationSession]

    def _target(
        self, asset_id: str, requested_w: float | None
    ) -> tuple[EvseState, StationSession] | SetpointResult:
        evse = self._evses.get(asset_id)
        if evse is None:
            return SetpointResult(
                "", requested_w, "refused", f"unknown EVSE asset {asset_id!r}", asset_id=asset_id
            )
        station_id = evse.station.config.station_id
        session = self._sessions.get(station_id)
        if session is None or evse.station.ocpp_version is None:
            return SetpointResult(
                station_id,
                requested_w,
                "offline",
                "station not connected",
                asset_id=asset_id,
                evse_id=evse.config.evse_id,
            )
        return evse, session

    @staticmethod
    def _facts(evse: EvseState) -> StationFacts:
        version = evse.station.ocpp_version
        assert version is not None
        return StationFacts(
            ocpp_version=version,
            transaction_id=evse.transaction_id,
            needs=evse.needs,
            max_charge_w=evse.config.max_charge_w,
            max_discharge_w=evse.config.max_discharge_w,
            evse_id=evse.config.evse_id,
        )

    @staticmethod
    def _valid_to(valid_to_ms: int | None, valid_for_s: float | None) -> str | None:
        if valid_for_s is not None:
            valid_to_ms = _now_ms() + round(valid_for_s * 1000)
        return None if valid_to_ms is None else format_ocpp_time(valid_to_ms)

    async def set_power(
        self,
        asset_id: str,
        power_w: float,
        *,
        valid_for_s: float | None = None,
        valid_to_ms: int | None = None,
        max_offline_s: int | None = None,
    ) -> SetpointResult:
        """Send an absolute power setpoint (+ charge) to one EVSE as a charging profile.

        The profile follows ``control.ocpp_plan.plan_setpoint``: a TxProfile in a
        transaction (CentralSetpoint for OCPP 2.1 V2X cars, a non-negative limit
        otherwise), a TxDefaultProfile limit without one; discharge that cannot be honoured
        is refused, not sent. ``valid_for_s`` (or the time ``valid_to_ms``) sets the
        profile's ``validTo``, so the station reverts to its default when commands stop.
        Never raises for station trouble: the result says what happened.
        """
        target = self._target(asset_id, power_w)
        if isinstance(target, SetpointResult):
            return target
        evse, session = target
        valid_to = self._valid_to(valid_to_ms, valid_for_s)
        plan = plan_setpoint(
            self._facts(evse), power_w, valid_to=valid_to, max_offline_s=max_offline_s
        )
        return await self._send_plan(session, evse, plan, power_w)

    async def set_local_frequency(
        self,
        asset_id: str,
        curve: Sequence[tuple[float, float]],
        *,
        baseline_w: float = 0.0,
        valid_to_ms: int | None = None,
        max_offline_s: int | None = None,
    ) -> SetpointResult:
        """Program an OCPP 2.1 LocalFrequency profile (``plan_local_frequency``) on an EVSE."""
        target = self._target(asset_id, baseline_w)
        if isinstance(target, SetpointResult):
            return target
        evse, session = target
        plan = plan_local_frequency(
            self._facts(evse),
            curve,
            baseline_w=baseline_w,
            valid_to=self._valid_to(valid_to_ms, None),
            max_offline_s=max_offline_s,
        )
        return await self._send_plan(session, evse, plan, baseline_w)

    async def clear_profiles(self, asset_id: str) -> SetpointResult:
        """Remove gridflex's TxProfile and TxDefaultProfile of one EVSE (ClearChargingProfile).

        Accepted when the station cleared them or had none of them (``Unknown``).
        """
        target = self._target(asset_id, None)
        if isinstance(target, SetpointResult):
            return target
        evse, session = target
        outcome: SetpointResult | None = None
        for request in clear_requests(evse.config.evse_id):
            outcome = await self._call(
                session, evse, "ClearChargingProfile", request, requested_w=None
            )
            if outcome.status == "rejected" and outcome.reason == "Unknown":
                outcome = replace(outcome, status="accepted", reason="no such profile")
            if not outcome.accepted:
                return outcome
        assert outcome is not None
        return outcome

    async def send_station_max(self, session: StationSession) -> SetpointResult | None:
        """Send the station-wide limit (``StationConfig.max_w``), if configured."""
        state = session.state
        max_w = state.config.max_w
        if max_w is None or state.ocpp_version is None:
            return None
        plan = plan_station_max(
            state.ocpp_version, max_w, start_schedule=format_ocpp_time(_now_ms())
        )
        first = next(iter(state.evses.values()))
        result = await self._send_plan(session, first, plan, max_w)
        log.info("%s: station-wide limit %.0f W %s", session.id, max_w, result.status)
        return result

    async def _send_plan(
        self,
        session: StationSession,
        evse: EvseState,
        plan: ChargingProfilePlan | Refusal,
        requested_w: float,
    ) -> SetpointResult:
        station_id = session.id
        if isinstance(plan, Refusal):
            reason = plan.reason
            log.info("%s: request for %s refused: %s", station_id, evse.asset_id, reason)
            return SetpointResult(
                station_id,
                requested_w,
                "refused",
                reason,
                ocpp_version=evse.station.ocpp_version,
                asset_id=evse.asset_id,
                evse_id=evse.config.evse_id,
            )
        result = await self._call(
            session, evse, "SetChargingProfile", plan.request, requested_w=requested_w
        )
        result = replace(
            result, sent_w=plan.sent_w, operation_mode=plan.operation_mode, purpose=plan.purpose
        )
        log.info(
            "%s EVSE %d: %s %s %.0f W (asked %.0f W) %s",
            station_id,
            plan.request["evseId"],
            plan.purpose,
            plan.operation_mode,
            plan.sent_w,
            requested_w,
            result.status,
        )
        return result

    async def _call(
        self,
        session: StationSession,
        evse: EvseState,
        action: str,
        request: dict[str, object],
        *,
        requested_w: float | None,
    ) -> SetpointResult:
        def result(
            status: CsmsStatus,
            reason: str | None,
            answered_ms: int | None = None,
            answer_frame: int | None = None,
        ) -> SetpointResult:
            return SetpointResult(
                session.id,
                requested_w,
                status,
                reason,
                ocpp_version=session.state.ocpp_version,
                asset_id=evse.asset_id,
                evse_id=evse.config.evse_id,
                answered_ms=answered_ms,
                answer_frame=answer_frame,
            )

        self.stats.profiles_sent += 1
        try:
            answer, frame_no = await session.call_numbered(action, dict(request))
        except TimeoutError:
            log.warning("%s: no answer to %s in time", session.id, action)
            return result("timeout", f"no answer within {self.settings.response_timeout_s} s")
        except OCPPError as exc:
            log.warning("%s: %s failed: %s", session.id, action, exc)
            return result("error", f"{exc.code}: {exc.description}")
        except ConnectionClosed:
            return result("offline", "connection closed while waiting for the answer")
        status_info = answer.get("statusInfo") or {}
        reason: str | None = status_info.get("reasonCode")
        if status_info.get("additionalInfo"):
            reason = f"{reason}: {status_info['additionalInfo']}"
        status = answer.get("status")
        if status != "Accepted" and reason is None:
            reason = str(status)
        outcome: CsmsStatus = "accepted" if status == "Accepted" else "rejected"
        return result(outcome, reason, answered_ms=_now_ms(), answer_frame=frame_no)

    # -- read-back

    def readback_timeout_s(self, asset_id: str) -> float:
        """How long to wait for the EVSE's next meter value: twice its interval in force.

        The transaction interval while a transaction runs, else the clock-aligned one.
        """
        evse = self._evses.get(asset_id)
        interval_s = self.settings.meter_interval_s
        if evse is not None and evse.station.meter_interval_s is not None:
            interval_s = evse.station.meter_interval_s
        if evse is None or evse.transaction_id is None:
            interval_s = max(interval_s, aligned_interval_s(self.settings.meter_interval_s))
        return 2.0 * interval_s

    async def measured_after(
        self, result: SetpointResult, timeout_s: float | None = None
    ) -> MeasuredPower | None:
        """The first meter value the EVSE sent after answering ``result``; None in time.

        ``timeout_s`` defaults to ``readback_timeout_s``.
        """
        if result.asset_id is None or result.answer_frame is None:
            return None
        evse = self._evses.get(result.asset_id)
        if evse is None:
            return None
        if timeout_s is None:
            timeout_s = self.readback_timeout_s(result.asset_id)
        future = evse.power_after(result.answer_frame)
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(future, timeout_s)
        return None
