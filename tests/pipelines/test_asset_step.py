"""The one keyed step per asset and the plain tuples that cross between cluster processes."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from gridflex.contract import EvChargingNeeds, Telemetry
from gridflex.history import SCHEMAS, TELEMETRY
from pipelines import asset_step
from pipelines.asset_step import ROW_FIELDS, AssetStep, history_row
from pipelines.assets import AssetProfile, AssetTracker, CarDefaults
from pipelines.dispatch import DroopParams
from pipelines.fleet import AssetUpdate
from pipelines.frequency import FrequencySample
from pipelines.history_sink import telemetry_row
from pipelines.reading import TELEMETRY_FIELDS, Reading
from pipelines.validate import RegisterState
from pipelines.windows import ArrivedSample, FrequencyWindowLogic, FrequencyWindows
from tests.pipelines.helpers import T0_MS, telemetry

NEEDS = EvChargingNeeds(
    departure_ms=T0_MS + 3_600_000,
    requested_energy_wh=20_000,
    target_soc_pct=80.0,
    max_discharge_w=7_000,
    v2x=True,
)
INVERTER = AssetProfile("inv-1", "inverter", 10_000, 10_000, 60_000, 10, 90, 0.0, DroopParams())


def _telemetry(**extra: Any) -> Telemetry:
    return Telemetry.model_validate(telemetry("cs-1", T0_MS, 3, kind="evse", **extra))


READINGS = [
    _telemetry(),
    _telemetry(
        soc_pct=41.5, energy_import_wh=1510.0, status="charging", transaction_id="tx-1", ev=NEEDS
    ),
]


def test_a_reading_has_the_contract_fields_in_order() -> None:
    """A field added to ``telemetry/1`` must be added to :class:`Reading` too."""
    assert Reading._fields == (*TELEMETRY_FIELDS, "received_ms")


@pytest.mark.parametrize("t", READINGS, ids=["bare", "with_needs"])
def test_a_reading_comes_back_equal_from_its_wire_tuple(t: Telemetry) -> None:
    reading = Reading.of(t, T0_MS + 7)
    wire = pickle.loads(pickle.dumps(reading.to_wire()))
    assert type(wire) is tuple
    assert all(type(v) is tuple or type(v).__module__ == "builtins" for v in wire)
    assert Reading.from_wire(wire) == reading
    assert reading.telemetry() == t


@pytest.mark.parametrize("t", READINGS, ids=["bare", "with_needs"])
@pytest.mark.parametrize("flag", [None, False, True])
def test_the_history_row_tuple_is_the_row_of_the_history_sink(
    t: Telemetry, flag: bool | None
) -> None:
    assert list(ROW_FIELDS) == SCHEMAS[TELEMETRY].names
    row = history_row(Reading.of(t, T0_MS), flag)
    assert dict(zip(ROW_FIELDS, row, strict=True)) == telemetry_row(t, register_decreased=flag)


def test_an_update_comes_back_equal_from_its_wire_tuple() -> None:
    update = AssetUpdate(
        "inv-1", T0_MS, 4, "b", T0_MS + 3, None, -120.0, 0.0, -5000.0, 5000.0, 10_000.0,
        10_000.0, DroopParams(0.02, 0.03, 0.04, 0.06, 2.5), faulted=True, dispatchable=False,
    )  # fmt: skip
    wire = pickle.loads(pickle.dumps(update.to_wire()))
    assert AssetUpdate.from_wire(wire) == update


def test_the_window_step_takes_wire_samples_as_it_takes_samples() -> None:
    samples = [
        ("s1", f"a{i}", T0_MS + 300 * i, 50.0 + i / 100, T0_MS + 300 * i + 20) for i in range(12)
    ]
    as_tuples = FrequencyWindowLogic(FrequencyWindows(1000, 500, 2000))
    as_samples = FrequencyWindowLogic(FrequencyWindows(1000, 500, 2000))
    closed = as_tuples.on_batch(list(samples))
    expected = as_samples.on_batch([ArrivedSample(FrequencySample(*s[:4]), s[4]) for s in samples])
    assert [start for start, _ in closed[0]] == [T0_MS, T0_MS + 1000]
    assert closed == expected


def _step() -> AssetStep:
    return AssetStep({"inv-1": INVERTER}, CarDefaults(), forecast_interval_ms=1000)


def _wire(seq: int, **extra: Any) -> tuple[Any, ...]:
    t = Telemetry.model_validate(telemetry("inv-1", T0_MS + 200 * seq, seq, **extra))
    return Reading.of(t, T0_MS + 200 * seq + 5).to_wire()


def test_the_step_flags_a_register_that_went_back_and_tracks_the_asset_in_one_state() -> None:
    step = _step()
    state, first = step(None, _wire(1, soc_pct=50.0, energy_import_wh=100.0))
    state, second = step(state, _wire(2, soc_pct=50.0, energy_import_wh=90.0))
    assert first.row[-1] is False
    assert second.row[-1] is True
    assert state.registers == RegisterState("boot-1", 2, (90.0, None), decreases=1)
    assert state.soc_pct == 50.0
    assert first.forecast is not None  # due at the first reading
    assert second.forecast is None  # not again within forecast_interval_ms
    update = AssetUpdate.from_wire(second.update)
    assert (update.asset, update.seq, update.min_w, update.max_w) == ("inv-1", 2, -10_000, 10_000)


def test_a_snapshot_of_the_older_five_field_state_loads_without_registers() -> None:
    class OlderTracker:  # pickles as AssetTracker did before it held the registers
        def __reduce__(self) -> tuple[type[AssetTracker], tuple[object, ...]]:
            return AssetTracker, ("tx-1", NEEDS, T0_MS, 55.0, T0_MS + 1000)

    state = pickle.loads(pickle.dumps(OlderTracker()))
    assert state == AssetTracker("tx-1", NEEDS, T0_MS, 55.0, T0_MS + 1000, registers=None)
    _, tracked = _step()(state, _wire(1, energy_import_wh=5.0))
    assert tracked.row[-1] is False
    assert pickle.loads(pickle.dumps(state)) == state


def test_a_reading_the_asset_state_cannot_take_is_refused_and_still_in_history(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(asset_step, "track", broken)
    wire = _wire(1, energy_import_wh=5.0)
    state, tracked = _step()(None, wire)
    assert tracked.update is None
    assert tracked.row == history_row(Reading.from_wire(wire), False)
    assert tracked.rejected is not None
    assert tracked.rejected.kind == "unprocessable"
    assert tracked.rejected.reason == "ZeroDivisionError: float division by zero"
    assert tracked.rejected.message.topic == "gridflex/v1/s1/inverter/inv-1/telemetry"
    resent = Telemetry.model_validate_json(tracked.rejected.message.payload)
    assert Reading.of(resent, T0_MS + 205) == Reading.from_wire(wire)
    assert state.registers is not None  # the registers were still compared
