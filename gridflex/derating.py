"""Thermal derating of a connector (pure): one rule for the dataflow and the control writer.

An EVSE derates linearly with its connector temperature, from the full rating at
:data:`DERATE_START_C` to nothing at :data:`DERATE_STOP_C` (as IEC 61851 chargers do). The
dispatch plans with it (``pipelines.assets``) and the control writer clamps with it
(``control.limits``), so both must read the same numbers.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DERATE_START_C", "DERATE_STOP_C", "derate_factor"]

DERATE_START_C: Final = 70.0
DERATE_STOP_C: Final = 90.0


def derate_factor(temp_c: float | None) -> float:
    """Share of the rated power allowed at a connector temperature (1 when unknown)."""
    if temp_c is None or temp_c <= DERATE_START_C:
        return 1.0
    if temp_c >= DERATE_STOP_C:
        return 0.0
    return (DERATE_STOP_C - temp_c) / (DERATE_STOP_C - DERATE_START_C)
