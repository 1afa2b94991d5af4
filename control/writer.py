"""The setpoint writer: one command in, one device write at most, one ack out.

:func:`apply_command` is the last hop of the control loop (DESIGN.md invariants 1 and 2),
in this order: **read** the ledger -> **decide** (new / duplicate / stale / expired) ->
**clamp** -> **write** -> **read back** -> **record** -> **ack**. It is pure orchestration:
the device is injected as a :class:`SetpointDevice` and the clock as a function, so it
runs without MQTT or sockets (the SunSpec device is ``control.sunspec.SunSpecDevice``).

Results (``gridflex.contract.AckResult``) and what each leaves behind:

=============  ==========================  ========  ==================================
result         when                        written   recorded in the ledger
=============  ==========================  ========  ==================================
``duplicate``  ``command_id`` seen before  no        no (already there); ``applied_w``
                                                     is the first delivery's
``expired``    now > ``valid_until_ms``    no        no
``stale``      issued before the last      no        no
               applied command
``rejected``   the clamp refuses it        no        yes
``failed``     write or read-back raised,  maybe     no: the same id may be tried again
               or the read-back differs    (``applied_w`` set when the write went through)
``applied``    written as asked            yes       yes (the asset's last applied)
``clamped``    a rule changed the value    yes       yes (the asset's last applied)
=============  ==========================  ========  ==================================

Why these choices:

- ``stale`` and ``expired`` are not recorded because a redelivery gets the same refusal
  anyway (the asset's last applied command never moves back, and the clock does not
  either), and a flood of refused commands then costs no disk write.
- ``rejected`` is recorded: the clamp's verdict depends on the moment (SoC, site
  headroom), and a redelivery of the same command must not change the device later
  (invariant 1: receiving the same command twice changes nothing).
- ``failed`` is **not** recorded, so a redelivery (MQTT QoS 1) or a retry with the same
  ``command_id`` is handled as new. This is safe because setpoints are absolute: if the
  write did land before the read-back failed, writing the same value again changes
  nothing. The ramp and the staleness check keep referring to the last *confirmed*
  setpoint.
- A fault (``faulted``) is a clamp rule like any other: a new command is written as 0 W
  (``clamped``, rule ``fault``). A duplicate is still answered from the ledger without a
  write; stopping a faulted device without a command is the watchdog's job.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from control.clamp import MAX_CAPACITY_REACHED, Clamped, Limits, SiteHeadroom, clamp
from control.ledger import CommandRecord, Decision, Ledger
from gridflex import events
from gridflex.contract import AckResult, DispatchAck, DispatchCommand

__all__ = [
    "READBACK_TOLERANCE_W",
    "PreviousSetpoint",
    "ReadBackError",
    "SetpointDevice",
    "apply_command",
    "make_ack",
]

log = logging.getLogger(__name__)

READBACK_TOLERANCE_W = 10.0
"""How far the read-back may be from the value written, W: a device stores the setpoint
with its own scale factor (SunSpec ``WSet_SF``), so it may round it."""


class SetpointDevice(Protocol):
    """A device that takes an absolute active-power setpoint, gridflex sign (+ charge).

    A device may also offer ``async write_read_back(setpoint_w) -> float``: the write and
    the read-back in one round trip (a SunSpec inverter's Modbus function 23);
    :func:`apply_command` then uses it. It raises :class:`ReadBackError` when the write
    went through but the read-back failed, anything else when the write may not have.
    """

    async def write(self, setpoint_w: float) -> None:
        """Write the setpoint, W; raises on failure."""
        ...

    async def read_back(self) -> float:
        """The setpoint in force, as the device reports it, W; raises on failure."""
        ...


class ReadBackError(Exception):
    """The write went through, the read-back did not (``write_read_back``'s failure)."""


@dataclass(frozen=True, slots=True)
class PreviousSetpoint:
    """The setpoint last confirmed on the device, W, and when, epoch ms (for the ramp)."""

    setpoint_w: float
    at_ms: int


def make_ack(
    command: DispatchCommand,
    result: AckResult,
    *,
    ts_ms: int,
    reason: str | None = None,
    applied_w: float | None = None,
    readback_w: float | None = None,
    rules: tuple[str, ...] = (),
    written_ms: int | None = None,
) -> DispatchAck:
    """The ``ack/1`` answer to ``command``; latencies when the write was confirmed."""
    return DispatchAck(
        site=command.site,
        asset=command.asset,
        ts_ms=ts_ms,
        seq=command.seq,
        command_id=command.command_id,
        result=result,
        reason=reason,
        requested_w=command.setpoint_w,
        applied_w=applied_w,
        readback_w=readback_w,
        rules=list(rules),
        issued_ms=command.issued_ms,
        latency_from_issued_ms=None if written_ms is None else written_ms - command.issued_ms,
        latency_from_telemetry_ms=None if written_ms is None else written_ms - command.ts_ms,
    )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def apply_command(
    command: DispatchCommand,
    *,
    ledger: Ledger,
    device: SetpointDevice,
    limits: Limits,
    site_headroom: SiteHeadroom,
    soc_pct: float | None,
    faulted: str | None,
    now_ms: Callable[[], int],
    previous: PreviousSetpoint | None,
    readback_tolerance_w: float = READBACK_TOLERANCE_W,
    decision: Decision | None = None,
) -> DispatchAck:
    """Apply one command to one device and say what happened (see the module docstring).

    ``limits``, ``site_headroom``, ``soc_pct`` (None = unknown) and ``faulted`` (the
    latched fault text, None = none) feed :func:`control.clamp.clamp`; ``previous`` is the
    setpoint last confirmed on the device (None = unknown, no ramp limit). ``now_ms``
    returns the writer's clock, UTC epoch ms: read once for the ledger's decision and once
    after the read-back (the ack's ``ts_ms`` and the latencies). Commands for one asset
    must be applied one at a time (the ledger's check-then-record assumes it).
    ``decision`` is the ledger's verdict when the caller already asked for it for this
    command (a ``new`` one that has expired by now is asked again).
    """
    decided_ms = now_ms()
    if decision is None or (
        decision.verdict == "new"
        and command.valid_until_ms is not None
        and decided_ms > command.valid_until_ms
    ):
        decision = ledger.check(
            command.asset,
            command.command_id,
            command.issued_ms,
            command.valid_until_ms,
            decided_ms,
        )
    if decision.verdict == "duplicate":
        first = decision.previous
        assert first is not None
        return make_ack(
            command,
            "duplicate",
            ts_ms=decided_ms,
            reason=f"already handled: {first.result}",
            applied_w=first.applied_w,
        )
    if decision.verdict == "expired":
        return make_ack(
            command,
            "expired",
            ts_ms=decided_ms,
            reason=f"valid until {command.valid_until_ms}, now {decided_ms}",
        )
    if decision.verdict == "stale":
        last = decision.previous
        assert last is not None
        return make_ack(
            command,
            "stale",
            ts_ms=decided_ms,
            reason=f"issued before {last.command_id} (issued_ms {last.issued_ms})",
        )

    clamped: Clamped = clamp(
        command.setpoint_w,
        limits=limits,
        soc_pct=soc_pct,
        previous_w=None if previous is None else previous.setpoint_w,
        elapsed_s=None if previous is None else (decided_ms - previous.at_ms) / 1000.0,
        site=site_headroom,
        faulted=faulted,
    )
    if clamped.result == "rejected" or clamped.applied_w is None:
        if clamped.reason == MAX_CAPACITY_REACHED:
            msg = "%s: command %s rejected: %s"
            events.report(log, command.asset, clamped.reason, msg, command.asset,
                          command.command_id, event="limit", level=logging.WARNING)  # fmt: skip
        await _record(ledger, command, clamped, None, decided_ms)
        return make_ack(
            command,
            "rejected",
            ts_ms=decided_ms,
            reason=clamped.reason,
            rules=clamped.rules,
        )

    applied_w = clamped.applied_w
    write_read_back = getattr(device, "write_read_back", None)
    if write_read_back is not None:  # one round trip (SunSpec: Modbus function 23)
        try:
            readback_w = await write_read_back(applied_w)
        except ReadBackError as exc:
            reason = f"read-back: {_describe(exc)}"
            return _failed(command, clamped, now_ms(), reason, applied_w)
        except Exception as exc:  # the device's failure, whatever its kind, becomes the ack
            reason = f"write: {_describe(exc)}"
            return _failed(command, clamped, now_ms(), reason, written_w=None)
    else:
        try:
            await device.write(applied_w)
        except Exception as exc:
            reason = f"write: {_describe(exc)}"
            return _failed(command, clamped, now_ms(), reason, written_w=None)
        try:
            readback_w = await device.read_back()
        except Exception as exc:
            reason = f"read-back: {_describe(exc)}"
            return _failed(command, clamped, now_ms(), reason, applied_w)
    written_ms = now_ms()
    if not (math.isfinite(readback_w) and abs(readback_w - applied_w) <= readback_tolerance_w):
        reason = f"read back {readback_w:g} W after writing {applied_w:g} W"
        return _failed(command, clamped, written_ms, reason, applied_w, readback_w=readback_w)

    await _record(ledger, command, clamped, applied_w, written_ms)
    return make_ack(
        command,
        clamped.result,
        ts_ms=written_ms,
        reason=clamped.reason,
        applied_w=applied_w,
        readback_w=readback_w,
        rules=clamped.rules,
        written_ms=written_ms,
    )


def _failed(
    command: DispatchCommand,
    clamped: Clamped,
    ts_ms: int,
    reason: str,
    written_w: float | None,
    *,
    readback_w: float | None = None,
) -> DispatchAck:
    log.warning("%s: command %s failed: %s", command.asset, command.command_id, reason)
    return make_ack(
        command,
        "failed",
        ts_ms=ts_ms,
        reason=reason,
        applied_w=written_w,
        readback_w=readback_w,
        rules=clamped.rules,
    )


async def _record(
    ledger: Ledger,
    command: DispatchCommand,
    clamped: Clamped,
    applied_w: float | None,
    now_ms: int,
) -> None:
    # an fsync'd commit (synchronous=FULL) off the event loop, grouped with its neighbours
    inserted = await ledger.record_async(
        CommandRecord(
            asset=command.asset,
            command_id=command.command_id,
            issued_ms=command.issued_ms,
            result=clamped.result,
            requested_w=command.setpoint_w,
            applied_w=applied_w,
            reason=clamped.reason,
            recorded_ms=now_ms,
        )
    )
    if not inserted:
        log.warning("%s: command %s was recorded twice", command.asset, command.command_id)
