"""TelemetryEncoder writes exactly what the Telemetry model writes, and refuses what it refuses."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from collectors.ocpp.mapping import MeterReading
from collectors.ocpp.telemetry import StationFields, TelemetryEncoder
from gridflex.contract import EvChargingNeeds

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "schemas" / "telemetry.v1.schema.json").read_text())

V2X_NEEDS = EvChargingNeeds(
    departure_ms=1_767_225_600_000,
    requested_energy_wh=20_000.0,
    max_charge_w=11_000.0,
    max_discharge_w=7_000.0,
    min_soc_pct=20.0,
    target_soc_pct=80.0,
    v2x=True,
    energy_transfer_mode="DC_BPT",
)
CHARGE_ONLY_NEEDS = EvChargingNeeds(max_charge_w=11_040.0, energy_transfer_mode="AC_three_phase")

# Values that sit on the contract's bounds, past them, and that JSON spells oddly.
EDGES = [0.0, -0.0, 1e-5, 0.1, 99.99, 100.0, 100.5, 1e16, 1e17, -1.0, 2.5e-7, 12345.678]
NON_FINITE = [math.nan, math.inf, -math.inf]


def encoder() -> TelemetryEncoder:
    return TelemetryEncoder("site-1", "evse-7", "a1b2c3d4e5f6")


def readings(rng: random.Random, count: int) -> list[tuple[MeterReading, StationFields]]:
    """Mostly plausible values, each field now and then absent or taken from ``EDGES``."""

    def pick(low: float, high: float) -> float | None:
        draw = rng.random()
        if draw < 0.2:
            return None
        if draw < 0.35:
            return rng.choice(EDGES)
        return round(rng.uniform(low, high), rng.choice([0, 1, 2, 3, 6]))

    out = []
    for _ in range(count):
        reading = MeterReading(
            ts_ms=rng.choice([0, 1_767_225_600_123, rng.randint(0, 2**45)]),
            power_w=pick(-22_000, 22_000),
            energy_import_wh=pick(0, 1e7),
            energy_export_wh=pick(0, 1e6),
            soc_pct=pick(0, 100),
            current_a=pick(-32, 32),
            voltage_v=pick(200, 250),
            freq_hz=pick(49.5, 50.5),
            setpoint_w=pick(-11_000, 11_000),
        )
        station = StationFields(
            power_w=pick(-22_000, 22_000) or 0.0,
            temp_c=pick(-20, 90),
            status=rng.choice([None, "charging", "discharging", "suspended", "idle", "fault"]),
            device_status=rng.choice([None, "Charging", "SuspendedEV", "Ended", "Available"]),
            transaction_id=rng.choice([None, "9669983543d14b49", "tx-1"]),
            ev=rng.choice([None, V2X_NEEDS, CHARGE_ONLY_NEEDS]),
        )
        out.append((reading, station))
    return out


def model_json(enc: TelemetryEncoder, reading: MeterReading, station: StationFields, seq: int):
    try:
        return enc.model(reading, station, seq=seq).to_json()
    except ValidationError as exc:
        return exc


@pytest.mark.parametrize("seed", range(4))
def test_encoder_writes_the_models_bytes_or_raises_where_the_model_raises(seed: int) -> None:
    enc = encoder()
    rng = random.Random(seed)
    for seq, (reading, station) in enumerate(readings(rng, 500)):
        expected = model_json(enc, reading, station, seq)
        if isinstance(expected, ValidationError):
            with pytest.raises(ValidationError):
                enc.encode(reading, station, seq=seq)
        else:
            assert enc.encode(reading, station, seq=seq) == expected


def test_every_combination_of_present_fields_is_byte_equal_and_in_the_schema() -> None:
    enc = encoder()
    names = ["freq_hz", "voltage_v", "current_a", "soc_pct", "energy_import_wh"]
    for mask in itertools.product([False, True], repeat=len(names)):
        values = {n: 50.0 for n, on in zip(names, mask, strict=True) if on}
        reading = MeterReading(ts_ms=1_767_225_600_123, energy_export_wh=3.5, **values)
        station = StationFields(
            power_w=-7000.0,
            temp_c=31.5,
            status="discharging",
            device_status="Charging",
            ev=V2X_NEEDS,
        )
        payload = enc.encode(reading, station, seq=7)
        assert payload == enc.model(reading, station, seq=7).to_json()
        jsonschema.validate(json.loads(payload), SCHEMA)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("soc_pct", 120.0),
        ("soc_pct", -0.5),
        ("freq_hz", 0.0),
        ("freq_hz", 100.0),
        ("voltage_v", -230.0),
        ("energy_import_wh", -1.0),
        ("energy_export_wh", -1.0),
    ],
)
def test_out_of_range_value_raises_the_models_validation_error(field: str, value: float) -> None:
    reading = MeterReading(ts_ms=1, **{field: value})
    with pytest.raises(ValidationError, match=field):
        encoder().encode(reading, StationFields(power_w=0.0), seq=1)


@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_numbers_are_refused_not_written_as_null(value: float) -> None:
    # the model would accept NaN/inf in an unbounded float and write null: not a number
    enc = encoder()
    for reading, station in [
        (MeterReading(ts_ms=1), StationFields(power_w=value)),
        (MeterReading(ts_ms=1, current_a=value), StationFields(power_w=1.0)),
        (MeterReading(ts_ms=1, soc_pct=value), StationFields(power_w=1.0)),
    ]:
        with pytest.raises(ValueError, match="finite"):
            enc.encode(reading, station, seq=1)


@pytest.mark.parametrize("text", ['say "hi"', "back\\slash", "caf\u00e9", "tab\there", ""])
def test_strings_that_need_escaping_are_written_as_the_model_writes_them(text: str) -> None:
    enc = encoder()
    reading = MeterReading(ts_ms=1, soc_pct=50.0)
    station = StationFields(power_w=1.0, status="idle", device_status=text, transaction_id=text)
    assert enc.encode(reading, station, seq=1) == enc.model(reading, station, seq=1).to_json()


@pytest.mark.parametrize("word", ["Charging", "SuspendedEV", "Faulted", "running"])
def test_a_status_outside_the_vocabulary_raises_the_models_validation_error(word: str) -> None:
    station = StationFields(power_w=1.0, status=word)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="status"):
        encoder().encode(MeterReading(ts_ms=1), station, seq=1)


def test_changed_charging_needs_are_written_not_the_previous_ones() -> None:
    enc = encoder()
    reading = MeterReading(ts_ms=1, soc_pct=50.0)
    first = enc.encode(reading, StationFields(power_w=1.0, ev=V2X_NEEDS), seq=1)
    second = enc.encode(reading, StationFields(power_w=1.0, ev=CHARGE_ONLY_NEEDS), seq=2)
    third = enc.encode(reading, StationFields(power_w=1.0), seq=3)
    assert json.loads(first)["ev"]["v2x"] is True
    assert json.loads(second)["ev"] == {"max_charge_w": 11040.0, "v2x": False,
                                        "energy_transfer_mode": "AC_three_phase"}  # fmt: skip
    assert "ev" not in json.loads(third)


def test_identifier_outside_the_contract_is_refused_at_construction() -> None:
    with pytest.raises(ValidationError):
        TelemetryEncoder("site-1", "evse 7", "boot")
    assert encoder().topic == "gridflex/v1/site-1/evse/evse-7/telemetry"


def test_a_typical_meter_value_is_written_without_building_the_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    enc = encoder()
    monkeypatch.setattr(enc, "model", lambda *_a, **_k: pytest.fail("built the model"))
    reading = MeterReading(
        ts_ms=1_767_225_600_123,
        power_w=7360.5,
        energy_import_wh=844421.85,
        energy_export_wh=0.0,
        soc_pct=41.27,
        current_a=10.67,
        voltage_v=230.0,
    )
    station = StationFields(
        power_w=7360.5,
        status="charging",
        device_status="Charging",
        transaction_id="9669983543d14b49",
        ev=V2X_NEEDS,
    )
    assert json.loads(enc.encode(reading, station, seq=3))["soc_pct"] == 41.27
