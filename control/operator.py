"""What an operator can see and do through the REST API, on top of a running ControlService.

:class:`Operator` implements the API's ``ControlApi`` protocol (``control.api``): the live
view of each asset, manual commands through the same mailbox, ledger and clamp as the
dataflow's, clearing latched faults, the service's health, and a live stream of the
readings, commands and acks passing through. It changes the service only through its
mailboxes, fault latch and per-asset override fields, on the service's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from control.api.stream import StreamHub
from control.mailbox import Job
from control.service import ControlService
from gridflex.contract import DispatchAck, DispatchCommand

__all__ = ["MANUAL_ANSWERS", "Operator", "manual_command_id"]

log = logging.getLogger(__name__)

#: Manual answers kept in memory for repeated transaction ids; older ones are rebuilt from
#: the ledger.
MANUAL_ANSWERS = 1024


def manual_command_id(asset_id: str, transaction_id: str) -> str:
    """``api-{asset}-{transaction_id}``: one command id per operator transaction."""
    return f"api-{asset_id}-{transaction_id}"


def _dump(message: DispatchCommand | DispatchAck | None) -> dict[str, Any] | None:
    return None if message is None else message.model_dump(mode="json", by_alias=True)


class Operator:
    """The REST API's view of a :class:`ControlService` (see the module docstring)."""

    def __init__(self, service: ControlService) -> None:
        self.service = service
        self._answers: OrderedDict[str, DispatchAck] = OrderedDict()
        self._manual: dict[str, dict[str, Any]] = {}
        self.hub = StreamHub()
        service.taps.append(self.hub.publish)

    @property
    def site_id(self) -> str:
        """The site's id."""
        return self.service.site.id

    def asset_ids(self) -> list[str]:
        """The ids of the site's assets, in site-file order."""
        return list(self.service.assets)

    def asset_view(self, asset_id: str) -> dict[str, Any] | None:
        """Live state, limits, last command and ack, faults, override; None if unknown."""
        svc = self.service
        asset = svc.assets.get(asset_id)
        if asset is None:
            return None
        now_ms = svc.now_ms()
        control = svc.control[asset_id]
        reading = svc.live.reading(asset_id)
        override = svc.override(asset_id, now_ms)
        profile = None if svc.profiles is None else svc.profiles.active(asset_id, now_ms)
        limits = asdict(svc.limits_now(asset_id, now_ms))
        limits["profile"] = None if profile is None else _as_dict(profile)
        return {
            "asset": asset_id,
            "kind": asset.kind,
            "telemetry": None if reading is None else reading.as_dict(),
            "fresh": svc.live.fresh(asset_id, now_ms) is not None,
            "limits": limits,
            "default_setpoint_w": asset.default_setpoint_w,
            "setpoint_w": None if control.previous is None else control.previous.setpoint_w,
            "last_command": _dump(control.last_command),
            "last_ack": _dump(control.last_ack),
            "acks": dict(control.acks),
            "faults": [f.code for f in svc.faults.latched(asset_id)],
            "fault_details": [asdict(f) for f in svc.faults.latched(asset_id)],
            "emergency_stop": control.estop,
            "manual": None if override is None else self._manual.get(asset_id),
            "local_droop": None if svc.droop is None else svc.droop.snapshot().get(asset_id),
            "queued": len(control.mailbox.items),
        }

    async def manual_dispatch(
        self, asset_id: str, setpoint_w: float, transaction_id: str, valid_for_s: float
    ) -> DispatchAck:
        """Apply an operator's command now, through the same ledger and clamp.

        The command id is :func:`manual_command_id`: the same transaction twice is applied
        once and answered with the first answer (a ``failed`` one is tried again). While the
        command is valid, automatic commands for the asset are refused (``rejected``,
        ``manual override``). Raises ``KeyError`` for an unknown asset.
        """
        svc = self.service
        if asset_id not in svc.assets:
            raise KeyError(asset_id)
        command_id = manual_command_id(asset_id, transaction_id)
        first = self._answers.get(command_id)
        if first is not None:
            return first
        now_ms = svc.now_ms()
        decision = svc.ledger.check(asset_id, command_id, now_ms, None, now_ms)
        record = decision.previous if decision.verdict == "duplicate" else None
        if record is not None:  # answered before a restart: rebuild the first answer
            return DispatchAck(
                site=self.site_id,
                asset=asset_id,
                ts_ms=record.recorded_ms,
                seq=0,
                command_id=command_id,
                result=record.result,  # type: ignore[arg-type]
                reason=record.reason,
                requested_w=record.requested_w,
                applied_w=record.applied_w,
                issued_ms=record.issued_ms,
            )
        valid_until_ms = now_ms + round(valid_for_s * 1000)
        command = DispatchCommand(
            site=self.site_id,
            asset=asset_id,
            ts_ms=now_ms,
            seq=0,
            command_id=command_id,
            issued_ms=now_ms,
            setpoint_w=setpoint_w,
            base_setpoint_w=setpoint_w,
            valid_until_ms=valid_until_ms,
            mode="manual",
            reason=f"operator, transaction {transaction_id}"[:256],
        )
        control = svc.control[asset_id]
        control.manual_until_ms, control.manual_command_id = valid_until_ms, command_id
        self._manual[asset_id] = {
            "setpoint_w": setpoint_w,
            "transaction_id": transaction_id,
            "valid_until_ms": valid_until_ms,
        }
        reply: asyncio.Future[DispatchAck] = asyncio.get_running_loop().create_future()
        control.mailbox.put(Job("command", command, manual=True, reply=reply))
        ack = await reply
        if ack.result != "failed":
            self._answers[command_id] = ack
            while len(self._answers) > MANUAL_ANSWERS:
                self._answers.popitem(last=False)
        return ack

    async def cancel_manual(self, asset_id: str) -> bool:
        """End the asset's manual override; False when none was in force."""
        svc = self.service
        control = svc.control[asset_id]
        active = svc.override(asset_id, svc.now_ms()) is not None
        control.manual_until_ms = control.manual_command_id = None
        return active

    async def clear_fault(self, asset_id: str) -> list[str]:
        """Clear the asset's latched faults; returns their codes.

        A fault the device still reports latches again with its next reading or status.
        """
        svc = self.service
        cleared = svc.faults.clear(asset_id)
        svc.control[asset_id].estop = None
        if cleared:
            log.warning(
                "%s: faults cleared by an operator: %s",
                asset_id,
                ", ".join(f.describe() for f in cleared),
            )
        return [f.code for f in cleared]

    async def profile_changed(self, asset_id: str) -> None:
        """A charge profile changed: the asset's last setpoint is clamped anew at once.

        For an OCPP station that is a new SetChargingProfile through the CSMS, for an
        inverter a 704 write; the next commands are clamped with the new limits anyway.
        """
        limits = self.service.limits_now(asset_id, self.service.now_ms())
        log.info("%s: charge profile changed; limits now %s", asset_id, limits)
        self.service.queue_reapply(asset_id)

    def health(self) -> dict[str, Any]:
        """Whether the service is up and talking to the broker, with counters."""
        svc = self.service
        return {
            "status": "ok" if svc.mqtt.connected else "degraded",
            "mqtt_connected": svc.mqtt.connected,
            "site": self.site_id,
            "assets": len(svc.assets),
            "faulted_assets": sum(1 for a in svc.assets if svc.faults.latched(a)),
            "acks": dict(svc.results),
            "dead_letters": svc.dead_letters,
            "watchdog_trips": svc.watchdog_trips,
            "started_ms": svc.started_ms,
        }

    def stream(self) -> AsyncIterator[tuple[str, bytes]]:
        """A new subscription to the readings, commands and acks passing through, live.

        A subscriber that falls behind loses its oldest messages (``StreamHub``).
        """
        return self.hub.subscribe()


def _as_dict(value: Any) -> dict[str, Any]:
    return asdict(value) if hasattr(value, "__dataclass_fields__") else dict(vars(value))
