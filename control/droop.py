"""Local droop: program the droop curve into the devices, then only supervise it.

With ``[dispatch] local_droop = true`` the device itself answers the grid frequency (on its
own measurement, no round trip through gridflex): an inverter through SunSpec model 711, a
V2X station through an OCPP 2.1 ``LocalFrequency`` charging profile. gridflex writes the
curve once and checks that it stays there:

- :func:`droop_params_of`: an asset's curve from the site file, ``[dispatch.droop]`` with
  the asset's own ``droop`` overrides (the dispatch uses the same
  :func:`pipelines.site.droop_params`, so the pipeline's expected response and the device's
  curve are one curve), as the one droop type :class:`pipelines.dispatch.DroopParams`
  (response time included).
- :class:`DroopProgrammable`: what a device must offer, ``async program_droop(params) ->
  DroopReadback`` (write, read back, raise when the read-back differs);
  :class:`DroopReadable` adds ``async read_droop()``. ``control.sunspec.SunSpecDevice`` is
  both; a device without ``read_droop`` is re-programmed at every check instead (the
  writes are idempotent).
- :class:`LocalDroopSupervisor`: one task per asset. It programs the device when it is
  first reachable, re-reads the curve every ``verify_s`` and programs it again on drift (a
  reboot back to factory, an operator's change) and after any failure (unreachable,
  refused, timed out: a device that comes back is programmed afresh). One asset failing
  or hanging (every call has ``timeout_s``) never holds up another. Its per-asset
  :class:`AssetDroopState` (``pending`` / ``programmed`` / ``failed`` / ``unsupported``,
  with the reason and the last read-back) is what the service and the REST API show.

Run it with ``await supervisor.run(stop_event)`` or ``await supervisor.start()`` ...
``await supervisor.stop()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, runtime_checkable

from gridflex.config import DispatchConfig, EvseAsset, InverterAsset
from gridflex.runtime import cancel_and_wait
from pipelines.dispatch import DroopParams
from pipelines.site import droop_params

__all__ = [
    "AssetDroopState",
    "DroopProgrammable",
    "DroopReadable",
    "DroopReadback",
    "DroopStatus",
    "LocalDroopSupervisor",
    "droop_params_of",
]

log = logging.getLogger(__name__)

DroopStatus = Literal["pending", "programmed", "failed", "unsupported"]

_FIELDS: tuple[tuple[str, str], ...] = (
    ("db_of_hz", "db"),
    ("db_uf_hz", "db"),
    ("k_of", "k"),
    ("k_uf", "k"),
    ("response_time_s", "response"),
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def droop_params_of(dispatch: DispatchConfig, asset: InverterAsset | EvseAsset) -> DroopParams:
    """The curve to program into ``asset``: ``[dispatch.droop]`` + the asset's overrides."""
    return droop_params(dispatch.droop, asset.droop)


@dataclass(frozen=True, slots=True)
class DroopReadback:
    """The droop a device reports it has in force.

    Attributes:
        enabled: The device droops (SunSpec 711: ``Ena`` set and a control set active).
        params: The curve in force (None: the device holds none the droop law can use).
        db_step_hz: Resolution of the dead bands on the device (SunSpec ``10**Db_SF``), Hz.
        k_step: Resolution of the droops (``10**K_SF``).
        response_step_s: Resolution of the response time (``10**RspTms_SF``), s.

    """

    enabled: bool
    params: DroopParams | None
    db_step_hz: float = 0.0
    k_step: float = 0.0
    response_step_s: float = 0.0

    def differences(self, wanted: DroopParams) -> list[str]:
        """How the read-back differs from ``wanted`` beyond the device's resolution.

        A value the device stores with a scale factor may be off by half a step (it
        rounds); more than that is a difference. Empty when the device has ``wanted``.
        """
        if self.params is None:
            return ["no usable droop curve in force"]
        out = [] if self.enabled else ["droop not enabled"]
        steps = {"db": self.db_step_hz, "k": self.k_step, "response": self.response_step_s}
        for name, kind in _FIELDS:
            got, want = getattr(self.params, name), getattr(wanted, name)
            if abs(got - want) > steps[kind] / 2 + 1e-9:
                out.append(f"{name} {got:g} instead of {want:g}")
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``enabled`` and the curve's fields (None when there is none)."""
        params = None
        if self.params is not None:
            params = {name: getattr(self.params, name) for name, _ in _FIELDS}
        return {"enabled": self.enabled, "params": params}


class DroopProgrammable(Protocol):
    """A device that takes a droop curve and answers on its own frequency measurement."""

    async def program_droop(self, params: DroopParams) -> DroopReadback:
        """Write the curve, enable it, read it back; raise when it did not take."""
        ...


@runtime_checkable
class DroopReadable(Protocol):
    """A device that can also report the droop in force (for the periodic check)."""

    async def read_droop(self) -> DroopReadback:
        """The droop in force; raises when the device cannot be read."""
        ...


@dataclass(frozen=True, slots=True)
class AssetDroopState:
    """The local droop of one asset as the supervisor last saw it.

    Attributes:
        asset: Asset id.
        status: ``pending`` (not reached yet), ``programmed`` (the device has the curve),
            ``failed`` (the last attempt failed: ``reason``; retried), ``unsupported``
            (no device that can droop locally).
        params: The curve the asset should have.
        reason: Why it failed, or why it was last (re)programmed.
        readback: The last read-back from the device.
        programmed_ms: When the curve was last programmed, UTC epoch ms.
        checked_ms: When the device last confirmed the curve, UTC epoch ms.
        programs: Successful programmings (the first, after reconnects, on drift).
        failures: Consecutive failed attempts (0 once one succeeds).

    """

    asset: str
    status: DroopStatus
    params: DroopParams
    reason: str | None = None
    readback: DroopReadback | None = None
    programmed_ms: int | None = None
    checked_ms: int | None = None
    programs: int = 0
    failures: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for the service's status and the REST API."""
        return {
            "asset": self.asset,
            "status": self.status,
            "params": {name: getattr(self.params, name) for name, _ in _FIELDS},
            "reason": self.reason,
            "readback": None if self.readback is None else self.readback.as_dict(),
            "programmed_ms": self.programmed_ms,
            "checked_ms": self.checked_ms,
            "programs": self.programs,
            "failures": self.failures,
        }


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class LocalDroopSupervisor:
    """Programs and watches the local droop of each asset (see the module docstring).

    Args:
        targets: Per asset, its device and the curve it should have.
        unsupported: Assets that cannot droop locally, with the reason (shown, not run).
        verify_s: How often the curve is read back (and programmed again on drift), s.
        retry_s: First wait after a failure, s; doubles per failure up to ``verify_s``.
        timeout_s: Longest a program or read may take, s (then it counts as failed).
        now_ms: The clock, UTC epoch ms.

    """

    def __init__(
        self,
        targets: Mapping[str, tuple[DroopProgrammable, DroopParams]],
        *,
        unsupported: Mapping[str, tuple[DroopParams, str]] | None = None,
        verify_s: float = 60.0,
        retry_s: float = 5.0,
        timeout_s: float = 10.0,
        now_ms: Callable[[], int] = _now_ms,
    ) -> None:
        if verify_s <= 0 or retry_s <= 0 or timeout_s <= 0:
            raise ValueError("verify_s, retry_s and timeout_s must be > 0")
        self.targets = dict(targets)
        self.verify_s = verify_s
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.now_ms = now_ms
        self.states: dict[str, AssetDroopState] = {
            asset: AssetDroopState(asset, "pending", params)
            for asset, (_, params) in self.targets.items()
        }
        for asset, (params, reason) in (unsupported or {}).items():
            self.states[asset] = AssetDroopState(asset, "unsupported", params, reason=reason)
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def for_site(
        cls,
        dispatch: DispatchConfig,
        assets: Mapping[str, InverterAsset | EvseAsset],
        devices: Mapping[str, DroopProgrammable],
        **options: Any,
    ) -> LocalDroopSupervisor:
        """A supervisor for the site's assets; those without a device are ``unsupported``.

        ``devices`` maps an asset id to its device (``LazySunSpecDevice`` for an inverter,
        the OCPP station's device once it offers ``program_droop``); ``options`` go to the
        constructor.
        """
        targets = {}
        unsupported = {}
        for asset_id, asset in assets.items():
            params = droop_params_of(dispatch, asset)
            device = devices.get(asset_id)
            if device is None:
                unsupported[asset_id] = (params, f"no local droop for a {asset.kind} yet")
            else:
                targets[asset_id] = (device, params)
        return cls(targets, unsupported=unsupported, **options)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start one supervising task per asset."""
        for asset in self.targets:
            self._tasks.append(asyncio.create_task(self._supervise(asset), name=f"droop-{asset}"))
        log.info(
            "local droop: supervising %d assets (check every %.0f s), %d unsupported",
            len(self.targets),
            self.verify_s,
            len(self.states) - len(self.targets),
        )

    async def stop(self) -> None:
        """Cancel the tasks (a program or read in flight is abandoned)."""
        await cancel_and_wait(self._tasks, log)
        self._tasks.clear()

    async def run(self, stop: asyncio.Event) -> None:
        """Start, wait for ``stop``, stop."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every asset's state, JSON-ready (see :meth:`AssetDroopState.as_dict`)."""
        return {asset: state.as_dict() for asset, state in self.states.items()}

    # ------------------------------------------------------------------ per asset

    async def _supervise(self, asset: str) -> None:
        while True:
            state = await self.check(asset)
            if state.status == "programmed":
                delay = self.verify_s
            else:
                delay = min(self.retry_s * 2 ** (state.failures - 1), self.verify_s)
            await asyncio.sleep(delay)

    async def check(self, asset: str) -> AssetDroopState:
        """One cycle for one asset: program it, or read it back and program it on drift.

        A device that is not ``programmed`` (never reached, or its last attempt failed) is
        programmed; a programmed one is read back (re-programmed when it cannot be read
        back at all, see :class:`DroopReadable`). Never raises but for cancellation: a
        failure is the ``failed`` state with its reason.
        """
        device, params = self.targets[asset]
        before = self.states[asset]
        try:
            if before.status == "programmed" and isinstance(device, DroopReadable):
                readback = await asyncio.wait_for(device.read_droop(), self.timeout_s)
                drift = readback.differences(params)
                if not drift:
                    state = replace(before, readback=readback, checked_ms=self.now_ms())
                    self.states[asset] = state
                    return state
                reason = "drift: " + "; ".join(drift)
                log.warning("%s: local droop %s; programming it again", asset, reason)
            elif before.status == "programmed":
                reason = "periodic re-programming (the device cannot be read back)"
            elif before.status == "failed":
                reason = f"reached again after: {before.reason}"
            else:
                reason = "first contact"
            readback = await asyncio.wait_for(device.program_droop(params), self.timeout_s)
        except Exception as exc:
            cause = (
                f"timed out after {self.timeout_s:g} s"
                if isinstance(exc, TimeoutError)
                else _describe(exc)
            )
            state = replace(before, status="failed", reason=cause, failures=before.failures + 1)
            if before.status != "failed" or before.reason != cause:
                log.warning("%s: local droop failed: %s", asset, cause)
            self.states[asset] = state
            return state
        now = self.now_ms()
        state = replace(
            before,
            status="programmed",
            reason=reason,
            readback=readback,
            programmed_ms=now,
            checked_ms=now,
            programs=before.programs + 1,
            failures=0,
        )
        if before.status != "programmed":
            log.info("%s: local droop programmed (%s)", asset, reason)
        self.states[asset] = state
        return state
