"""The one place where SunSpec's power sign meets gridflex's.

SunSpec (701 ``W``, 704 ``WSet``/``WSetRvrt``) counts active power **+ for injection**
(export to the grid, battery discharging) and - for absorption. gridflex counts
``power_w`` **+ for import/charging** and - for export/discharge (DESIGN.md). So the two
are negatives of each other: every conversion between a SunSpec register value in watts
and a gridflex ``power_w`` goes through these two functions, in the simulator (device side)
and in the collector and control writer (gridflex side).

Energy needs no sign: 701 ``TotWhAbs`` (absorbed) is gridflex's ``energy_import_wh`` and
``TotWhInj`` (injected) is ``energy_export_wh``.
"""

from __future__ import annotations

__all__ = ["power_w_from_sunspec", "sunspec_w_from_power_w"]


def power_w_from_sunspec(sunspec_w: float) -> float:
    """Return gridflex ``power_w`` (+ import/charging) for a SunSpec watt value (+ injection)."""
    return -sunspec_w if sunspec_w else 0.0


def sunspec_w_from_power_w(power_w: float) -> float:
    """Return the SunSpec watt value (+ injection) for a gridflex ``power_w`` (+ import)."""
    return -power_w if power_w else 0.0
