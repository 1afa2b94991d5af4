"""Frequency-droop response of a simulated DER (SunSpec 711), as pure functions.

The static law is gridflex's own :func:`pipelines.dispatch.droop_delta_w` (IEEE 1547-2018
frequency droop, + charging): the simulated device and the dispatch controller share one
formula, so the device answers exactly what the controller expects. This module adds what a
device adds to it: the open-loop response in time.

IEEE 1547-2018 (definitions, "open-loop response time") defines the response time as the
time to reach 90 % of the change of output after a step of the input. The simulator
models the response as a first-order lag; a first-order lag reaches 90 % after
``tau * ln(10)`` (≈ 2.3 tau), so ``tau = RspTms / ln(10)``: the 1547 default of 5 s gives
tau ≈ 2.17 s.

Units: frequencies in Hz, powers in W (+ charging/import, gridflex's sign), times in s.
"""

from __future__ import annotations

import math

from pipelines.dispatch import DroopParams, droop_delta_w

__all__ = [
    "DEFAULT_RESPONSE_TIME_S",
    "DroopParams",
    "droop_delta_w",
    "first_order_step",
    "time_constant_s",
]

#: IEEE 1547-2018 default open-loop response time of the frequency droop, s.
DEFAULT_RESPONSE_TIME_S = 5.0


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
