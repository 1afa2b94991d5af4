"""SunSpec 701 InvSt in the telemetry status vocabulary."""

from __future__ import annotations

import pytest

from gridflex.contract import TELEMETRY_STATUSES
from gridflex.sunspec.status import inverter_status
from gridflex.sunspec.tables import load_model


@pytest.mark.parametrize(
    ("inv_st", "power_w", "expected"),
    [
        ("RUNNING", 4_600.0, "charging"),  # + import: the battery takes power
        ("RUNNING", -4_600.0, "discharging"),
        ("RUNNING", 0.0, "idle"),
        ("THROTTLED", -2_000.0, "discharging"),  # derated, still exporting
        ("THROTTLED", 1.0, "charging"),
        ("STANDBY", 0.0, "idle"),
        ("SLEEPING", 0.0, "idle"),
        ("STARTING", 0.0, "idle"),
        ("FAULT", 0.0, "fault"),
        ("FAULT", 500.0, "fault"),  # the state wins over the power
        ("OFF", 0.0, "unavailable"),
        ("SHUTTING_DOWN", -100.0, "unavailable"),
        ("42", 0.0, None),  # a value outside the 701 enumeration
        (None, 0.0, None),  # not read
    ],
)
def test_inverter_status(inv_st: str | None, power_w: float, expected: str | None) -> None:
    assert inverter_status(inv_st, power_w) == expected


def test_every_701_state_maps_into_the_vocabulary() -> None:
    for symbol in load_model(701).point("InvSt").symbols.values():
        assert inverter_status(symbol, 0.0) in TELEMETRY_STATUSES
