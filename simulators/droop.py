"""Frequency-droop response of a simulated DER (SunSpec 711), as pure functions.

The static law is gridflex's own :func:`pipelines.dispatch.droop_delta_w` (IEEE 1547-2018
frequency droop, + charging) with its parameters :class:`pipelines.dispatch.DroopParams`
(the one droop type of gridflex, response time included): the simulated device, the
dispatch controller and the control writer that programs the devices (``control.droop``)
share one formula and one type, so the device answers exactly what the controller expects.
This module adds what a device adds to it: the open-loop response in time.

IEEE 1547-2018 (definitions, "open-loop response time") defines the response time as the
time to reach 90 % of the change of output after a step of the input. The simulator
models the response as a first-order lag; a first-order lag reaches 90 % after
``tau * ln(10)`` (≈ 2.3 tau), so ``tau = RspTms / ln(10)``: the 1547 default of 5 s gives
tau ≈ 2.17 s.

Units: frequencies in Hz, powers in W (+ charging/import, gridflex's sign), times in s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gridflex.sunspec.codec import Value
from pipelines.dispatch import DEFAULT_RESPONSE_TIME_S, DroopParams, droop_delta_w

__all__ = [
    "ADOPT_COMPLETED",
    "ADOPT_FAILED",
    "ADOPT_IN_PROGRESS",
    "DEFAULT_RESPONSE_TIME_S",
    "DroopParams",
    "DroopScale",
    "DroopState",
    "control_set",
    "droop_delta_w",
    "droop_state",
    "first_order_step",
    "time_constant_s",
]


def time_constant_s(response_time_s: float) -> float:
    """First-order time constant whose 90 % step response takes ``response_time_s``.

    Args:
        response_time_s: Open-loop response time (SunSpec 711 ``RspTms``), s >= 0.

    Returns:
        ``response_time_s / ln(10)``, s; 0 (an instant response) for a response time <= 0.

    """
    return max(response_time_s, 0.0) / math.log(10.0)


def first_order_step(value: float, target: float, dt_s: float, tau_s: float) -> float:
    """Advance a first-order lag ``tau dy/dt = target - y`` by ``dt_s`` (exact for a step).

    Args:
        value: Output now (any unit).
        target: Input, held over the step (same unit).
        dt_s: Step length, s.
        tau_s: Time constant, s; <= 0 means the output follows the input at once.

    Returns:
        ``target + (value - target) * exp(-dt_s / tau_s)``.

    """
    if tau_s <= 0.0:
        return target
    if dt_s <= 0.0:
        return value
    return target + (value - target) * math.exp(-dt_s / tau_s)


# --------------------------------------------------------------------------- 711 controls

#: 711 ``AdptCtlRslt`` values (SunSpec): the last adoption is running, done, or refused.
ADOPT_IN_PROGRESS = 0
ADOPT_COMPLETED = 1
ADOPT_FAILED = 2


@dataclass(frozen=True, slots=True)
class DroopScale:
    """The scale factors of a 711 map: ``Db_SF``, ``K_SF``, ``RspTms_SF``."""

    db_sf: int
    k_sf: int
    rsp_tms_sf: int


@dataclass(frozen=True, slots=True)
class DroopState:
    """What a write to model 711 leaves in force on the device.

    Attributes:
        enabled: The device droops: ``Ena`` set and a control set active.
        params: The active control set in engineering units (None: none active).
        active: ``AdptCtlReq`` in force: the 1-based index of the active set, 0 for none.
        result: ``AdptCtlRslt`` to show (None: this write adopted nothing).

    """

    enabled: bool
    params: DroopParams | None
    active: int
    result: int | None


def control_set(values: Mapping[str, Value], index: int, scale: DroopScale) -> DroopParams | None:
    """Control set ``Ctl[index]`` of decoded 711 raw values, in engineering units.

    Returns None for a set the droop law cannot use: a dead band or the response time not
    implemented, or a droop ``KOf``/``KUf`` of 0 (it divides).
    """
    prefix = f"Ctl[{index}]."
    db_of, db_uf = values[prefix + "DbOf"], values[prefix + "DbUf"]
    k_of, k_uf, rsp = values[prefix + "KOf"], values[prefix + "KUf"], values[prefix + "RspTms"]
    if not (isinstance(db_of, int) and isinstance(db_uf, int) and isinstance(rsp, int)):
        return None
    if not (isinstance(k_of, int) and isinstance(k_uf, int) and k_of > 0 and k_uf > 0):
        return None
    return DroopParams(
        db_of_hz=_scaled(db_of, scale.db_sf),
        db_uf_hz=_scaled(db_uf, scale.db_sf),
        k_of=_scaled(k_of, scale.k_sf),
        k_uf=_scaled(k_uf, scale.k_sf),
        response_time_s=_scaled(rsp, scale.rsp_tms_sf),
    )


def _scaled(raw: int, sf: int) -> float:
    """``raw * 10**sf``, dividing for a negative ``sf`` (36 at -3 is exactly 0.036)."""
    return raw / 10**-sf if sf < 0 else float(raw * 10**sf)


def droop_state(
    values: Mapping[str, Value], *, active: int, adopt_requested: bool, scale: DroopScale
) -> DroopState | None:
    """Decide a write to 711 (SunSpec DER information model, control adoption).

    ``values`` are the model's raw points after the write; ``active`` is the set in force
    before it (1-based, 0 none); ``adopt_requested`` says the write touched
    ``AdptCtlReq``. The rules:

    - ``AdptCtlReq`` written with ``k`` in 1..``NCtl``: set ``k`` is checked and becomes
      the active one (``AdptCtlRslt`` COMPLETED), or stays out (FAILED, the previous set
      stays active); ``k`` = 0 deactivates the droop (COMPLETED).
    - A write into the active set itself (a device whose active set is writable) must
      leave a usable set: otherwise the whole write is refused (None: Modbus exception 3),
      as is an ``Ena`` or ``AdptCtlReq`` outside its range. Stored sets that are not
      active take any value until they are adopted.
    """
    ena, req, count = values["Ena"], values["AdptCtlReq"], values["NCtl"]
    if ena not in (0, 1) or not isinstance(req, int) or not isinstance(count, int):
        return None
    if not 0 <= req <= count:
        return None
    result: int | None = None
    if adopt_requested:
        if req == 0 or control_set(values, req - 1, scale) is not None:
            active, result = req, ADOPT_COMPLETED
        else:
            result = ADOPT_FAILED
    params = control_set(values, active - 1, scale) if active else None
    if active and params is None:
        return None
    return DroopState(enabled=ena == 1 and active > 0, params=params, active=active, result=result)
