"""SunSpec 701 inverter state (``InvSt``) in gridflex's telemetry status vocabulary (pure).

``telemetry.status`` uses one vocabulary for every asset (``gridflex.contract.TelemetryStatus``);
the device's own word, the ``InvSt`` symbol, travels in ``device_status``.

=======================================  ================================================
``InvSt`` (SunSpec 701)                  ``status``
=======================================  ================================================
``RUNNING``, ``THROTTLED``               by the sign of ``power_w``: ``charging`` (> 0),
                                         ``discharging`` (< 0), ``idle`` (0)
``SLEEPING``, ``STARTING``, ``STANDBY``  ``idle``
``FAULT``                                ``fault``
``OFF``, ``SHUTTING_DOWN``               ``unavailable``
anything else (a vendor value)           None (not known)
=======================================  ================================================

``THROTTLED`` is a running inverter whose output is limited (derating, curtailment): it
still exchanges power, so it is named by the direction of the power like ``RUNNING``.
"""

from __future__ import annotations

from typing import Final

from gridflex.contract import TelemetryStatus

__all__ = ["INVERTER_STATES", "inverter_status"]

#: ``InvSt`` symbols whose status does not depend on the power.
INVERTER_STATES: Final[dict[str, TelemetryStatus]] = {
    "SLEEPING": "idle",
    "STARTING": "idle",
    "STANDBY": "idle",
    "FAULT": "fault",
    "OFF": "unavailable",
    "SHUTTING_DOWN": "unavailable",
}
_RUNNING: Final = frozenset({"RUNNING", "THROTTLED"})


def inverter_status(inv_st: str | None, power_w: float) -> TelemetryStatus | None:
    """The telemetry ``status`` of an inverter in state ``inv_st`` at ``power_w`` (W, + charging).

    Returns None when the state is unknown (not read, or a value outside SunSpec 701).
    """
    if inv_st in _RUNNING:
        if power_w > 0:
            return "charging"
        return "discharging" if power_w < 0 else "idle"
    return INVERTER_STATES.get(inv_st) if inv_st is not None else None
