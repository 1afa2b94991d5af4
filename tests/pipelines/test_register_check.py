"""Energy registers that go back within one boot: flagged in validation and in the history."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from gridflex.contract import Telemetry
from gridflex.history import connect
from pipelines.validate import RegisterState, check_registers
from tests.pipelines.helpers import T0_MS, raw, telemetry
from tests.pipelines.test_flow import run


def reading(seq: int, *, boot: str = "boot-1", **registers: float | None) -> Telemetry:
    fields = {k: v for k, v in registers.items() if v is not None}
    return Telemetry.model_validate(
        telemetry("cs-1", T0_MS + seq * 1000, seq, kind="evse", boot=boot, **fields)
    )


def flags(*readings: Telemetry) -> list[tuple[str, ...]]:
    state: RegisterState | None = None
    out = []
    for r in readings:
        state, went_back = check_registers(state, r)
        out.append(went_back)
    return out


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        # the station that ended its session with Energy.Active.Import.Register = 0
        (
            [reading(1, energy_import_wh=0), reading(2, energy_import_wh=1510),
             reading(3, energy_import_wh=0)],
            [(), (), ("energy_import_wh",)],
        ),
        # steady and rising registers: nothing flagged
        (
            [reading(1, energy_import_wh=10, energy_export_wh=5),
             reading(2, energy_import_wh=10, energy_export_wh=7)],
            [(), ()],
        ),
        # the export register alone goes back
        (
            [reading(1, energy_import_wh=10, energy_export_wh=500),
             reading(2, energy_import_wh=11, energy_export_wh=499.5)],
            [(), ("energy_export_wh",)],
        ),
        # both go back in one reading
        (
            [reading(1, energy_import_wh=10, energy_export_wh=5),
             reading(2, energy_import_wh=9, energy_export_wh=4)],
            [(), ("energy_import_wh", "energy_export_wh")],
        ),
        # a new boot starts afresh: the collector restarted, a lower value is not a flag
        (
            [reading(7, energy_import_wh=1510), reading(1, boot="boot-2", energy_import_wh=0)],
            [(), ()],
        ),
        # a reading without the register keeps the last value for the next comparison
        (
            [reading(1, energy_import_wh=1510), reading(2), reading(3, energy_import_wh=1500)],
            [(), (), ("energy_import_wh",)],
        ),
        # a redelivered or older reading is passed unchecked and changes nothing
        (
            [reading(2, energy_import_wh=1510), reading(1, energy_import_wh=1000),
             reading(3, energy_import_wh=1505)],
            [(), (), ("energy_import_wh",)],
        ),
        # after a flag, the lower value is the new reference: the way back up is no flag
        (
            [reading(1, energy_import_wh=1510), reading(2, energy_import_wh=0),
             reading(3, energy_import_wh=1520), reading(4, energy_import_wh=1530)],
            [(), ("energy_import_wh",), (), ()],
        ),
    ],
)  # fmt: skip
def test_check_registers_flags_a_register_lower_than_before_in_the_same_boot(
    readings: list[Telemetry], expected: list[tuple[str, ...]]
) -> None:
    assert flags(*readings) == expected


def test_the_state_counts_the_flags_of_the_boot() -> None:
    state, _ = check_registers(None, reading(1, energy_import_wh=5))
    for seq, wh in ((2, 4), (3, 3), (4, 10)):
        state, _ = check_registers(state, reading(seq, energy_import_wh=wh))
    assert state == RegisterState("boot-1", 4, (10.0, None), decreases=2)


def _station(seq: int, import_wh: float, **extra: Any) -> dict[str, Any]:
    return telemetry(
        "cs-1", T0_MS + seq * 1000, seq, kind="evse", energy_import_wh=import_wh, **extra
    )


def test_the_pipeline_keeps_a_reading_whose_register_went_back_and_flags_it_in_the_history(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pipelines.asset_step")
    messages = [raw(_station(seq, wh)) for seq, wh in ((1, 0), (2, 800), (3, 1510), (4, 0))]
    messages.append(raw(_station(5, 0)))  # steady after the drop: no second flag
    messages.append(raw(_station(6, 0.0, power_w=0.0)))
    messages.append(raw(_station(7, -0.0)))
    run(messages, tmp_path)
    rows = (
        connect(tmp_path)
        .execute(
            "select seq, energy_import_wh, register_decreased from telemetry "
            "where asset = 'cs-1' order by seq"
        )
        .fetchall()
    )
    assert rows == [
        (1, 0.0, False),
        (2, 800.0, False),
        (3, 1510.0, False),
        (4, 0.0, True),
        (5, 0.0, False),
        (6, 0.0, False),
        (7, 0.0, False),
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "cs-1 (boot boot-1) seq 4: energy_import_wh went back (1510 -> 0 Wh); the reading is "
        "kept, flagged register_decreased in the history; further ones of this boot at debug "
        "level"
    ]
