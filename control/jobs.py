"""What each asset's worker does: commands, emergency stops, re-applications, the watchdog.

:class:`AssetJobs` is the per-asset half of ``control.service.ControlService`` (which
inherits it): one worker task per asset takes the jobs of its :class:`~control.mailbox.Mailbox`
one at a time, in order (the ledger's check-then-record relies on it), while assets proceed
in parallel. A job is a command (``ControlService.handle``, then its ack), an emergency
stop (0 W written at once), a re-application of the last command under new limits, or the
watchdog: one task sweeps the assets and queues it for a worker idle for ``watchdog_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from control.clamp import Limits, clamp
from control.devices import describe_error
from control.faults import FaultLatch
from control.live import LiveState
from control.mailbox import Job, Mailbox
from control.writer import PreviousSetpoint, SetpointDevice, make_ack
from gridflex.config import EvseAsset, InverterAsset, SiteConfig
from gridflex.contract import DispatchAck, DispatchCommand

__all__ = ["AssetControl", "AssetJobs"]

log = logging.getLogger("control.service")


@dataclass(slots=True)
class AssetControl:
    """What the service holds per asset beside its device."""

    mailbox: Mailbox
    previous: PreviousSetpoint | None = None
    last_command: DispatchCommand | None = None
    last_ack: DispatchAck | None = None
    manual_until_ms: int | None = None
    manual_command_id: str | None = None
    estop: dict[str, Any] | None = None
    acks: Counter[str] = field(default_factory=Counter)
    #: Whether the worker is running a job, and since when it has been idle (loop clock).
    busy: bool = False
    idle_since_s: float = 0.0


class AssetJobs:
    """The per-asset workers of ``ControlService`` (see the module docstring)."""

    site: SiteConfig
    assets: dict[str, InverterAsset | EvseAsset]
    devices: dict[str, SetpointDevice]
    control: dict[str, AssetControl]
    faults: FaultLatch
    live: LiveState
    now_ms: Callable[[], int]
    watchdog_s: float
    watchdog_trips: int

    if TYPE_CHECKING:  # provided by ControlService

        async def handle(self, command: DispatchCommand, *, manual: bool = False) -> DispatchAck:
            """Apply one command, return its ack."""

        def limits_now(self, asset_id: str, now_ms: int) -> Limits:
            """The clamp's limits for ``asset_id`` now."""

        def _publish_ack(self, asset_id: str, ack: DispatchAck) -> None:
            """Publish ``ack`` and count it."""

    async def _worker(self, asset_id: str, control: AssetControl) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await control.mailbox.next()
            control.busy = True
            try:
                await self._run_job(asset_id, job)
            finally:
                control.busy = False
                control.idle_since_s = loop.time()

    async def _run_job(self, asset_id: str, job: Job) -> None:
        if job.kind == "watchdog":
            await self._watchdog(asset_id)
            return
        if job.kind == "stop":
            await self._emergency_stop(asset_id)
            return
        if job.kind == "reapply":
            await self._reapply(asset_id)
            return
        command = job.command
        assert command is not None
        try:
            ack = await self.handle(command, manual=job.manual)
        except Exception as exc:  # a bug must not stop the asset's worker
            log.exception("%s: command %s crashed", asset_id, command.command_id)
            ack = make_ack(
                command,
                "failed",
                reason=f"internal error: {describe_error(exc)}",
                ts_ms=self.now_ms(),
            )
        if job.reply is not None and not job.reply.done():
            job.reply.set_result(ack)
        self._publish_ack(asset_id, ack)

    async def _watchdog_loop(self) -> None:
        """Queue a watchdog job for each asset whose worker has been idle for ``watchdog_s``.

        One sweep every ``min(watchdog_s / 4, 1)`` s over all assets, instead of a timeout
        on every mailbox wait (at a frequency step, 1,000 timers cancelled and re-armed in
        the loop's heap): the watchdog fires ``watchdog_s`` to ``watchdog_s`` + one sweep
        after the asset's last job, and again as long as no command comes.
        """
        loop = asyncio.get_running_loop()
        period_s = min(self.watchdog_s / 4, 1.0)
        started_s = loop.time()
        for control in self.control.values():  # idle since the start, not since boot
            control.idle_since_s = max(control.idle_since_s, started_s)
        while True:
            await asyncio.sleep(period_s)
            now_s = loop.time()
            for control in self.control.values():
                if control.busy or control.mailbox.items:
                    continue
                if now_s - control.idle_since_s >= self.watchdog_s:
                    control.idle_since_s = now_s  # queued once, until it has run
                    control.mailbox.put(Job("watchdog"))

    async def _emergency_stop(self, asset_id: str) -> None:
        """Write 0 W at once, whatever was in force (no ramp: it is a stop)."""
        control = self.control[asset_id]
        device = self.devices.get(asset_id)
        estop = control.estop or {}
        if device is None:
            estop.update(result="failed", reason="no device to write to")
            control.estop = estop
            return
        try:
            await device.write(0.0)
            readback_w = await device.read_back()
        except Exception as exc:
            estop.update(result="failed", reason=describe_error(exc), at_ms=self.now_ms())
            log.error("%s: emergency stop failed: %s", asset_id, describe_error(exc))
        else:
            control.previous = PreviousSetpoint(0.0, self.now_ms())
            estop.update(result="written", readback_w=readback_w, at_ms=self.now_ms())
            log.warning("%s: emergency stop: 0 W written (read back %.0f W)", asset_id, readback_w)
        control.estop = estop

    async def _watchdog(self, asset_id: str) -> None:
        """No command within ``watchdog_s``: write the default setpoint once.

        The device's own reversion timer (``revert_s``) covers a writer that died; this
        covers a pipeline that went silent while the writer runs. Only an asset this writer
        moved away from its default is written; a failure is logged and tried again
        ``watchdog_s`` later. A faulted asset's default is 0 W.
        """
        control = self.control[asset_id]
        last = control.previous
        device = self.devices.get(asset_id)
        default_w = (
            0.0 if self.faults.latched(asset_id) else self.assets[asset_id].default_setpoint_w
        )
        if last is None or last.setpoint_w == default_w or device is None:
            return
        try:
            await device.write(default_w)
        except Exception as exc:
            log.warning(
                "%s: watchdog could not write %.0f W: %s", asset_id, default_w, describe_error(exc)
            )
            return
        self.watchdog_trips += 1
        control.previous = PreviousSetpoint(default_w, self.now_ms())
        log.warning(
            "%s: no command for %.0f s: back to the default setpoint %.0f W (was %.0f W)",
            asset_id,
            self.watchdog_s,
            default_w,
            last.setpoint_w,
        )

    def queue_reapply(self, asset_id: str) -> None:
        """Clamp the asset's last command anew with the limits in force (a profile changed).

        It runs after the commands already waiting.
        """
        self.control[asset_id].mailbox.put(Job("reapply"))

    async def _reapply(self, asset_id: str) -> None:
        """Write the last command's setpoint clamped anew, if that changes what is in force.

        Not a command: nothing is recorded in the ledger and no ack is published; the log
        says what changed. A faulted asset stays at 0 W; a refusal leaves the device as is.
        """
        control = self.control[asset_id]
        last, previous = control.last_command, control.previous
        if last is None or previous is None or self.faults.latched(asset_id):
            return
        now_ms = self.now_ms()
        clamped = clamp(
            last.setpoint_w,
            limits=self.limits_now(asset_id, now_ms),
            soc_pct=self.live.soc_pct(asset_id, now_ms),
            previous_w=previous.setpoint_w,
            elapsed_s=(now_ms - previous.at_ms) / 1000.0,
            site=self.live.headroom(
                asset_id, self.site.max_import_w, self.site.max_export_w, now_ms
            ),
            faulted=None,
        )
        if clamped.applied_w is None or clamped.applied_w == previous.setpoint_w:
            return
        device = self.devices[asset_id]
        try:
            await device.write(clamped.applied_w)
            readback_w = await device.read_back()
        except Exception as exc:
            log.warning("%s: new limits not applied: %s", asset_id, describe_error(exc))
            return
        control.previous = PreviousSetpoint(clamped.applied_w, self.now_ms())
        log.info(
            "%s: new limits: %.0f W -> %.0f W (read back %.0f W, %s)",
            asset_id,
            previous.setpoint_w,
            clamped.applied_w,
            readback_w,
            ", ".join(clamped.rules) or "no rule",
        )
