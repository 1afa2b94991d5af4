"""The Modbus collector's pure part: schedule, lateness, backoff, decode, telemetry."""

from __future__ import annotations

import asyncio
import json
import math
import random
import struct
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import ValidationError

from collectors.modbus.connection import discover_plan
from collectors.modbus.fast import DeviceError
from collectors.modbus.plan import (
    InverterReading,
    PlannedPoint,
    PollPlan,
    build_plan,
    decode_data,
    decode_reading,
)
from collectors.modbus.schedule import LatenessStats, PollSchedule, backoff_s
from collectors.modbus.telemetry import TelemetryEncoder, to_telemetry
from gridflex.contract import Capabilities, Telemetry
from gridflex.sunspec.codec import decoder, not_implemented
from gridflex.sunspec.discovery import IllegalAddress, ModelInstance, ModelMap
from gridflex.sunspec.tables import load_model
from simulators.inverter import InverterModel, InverterRatings, SimulatedInverter

ROOT = Path(__file__).resolve().parents[2]


def _fake_read(device: SimulatedInverter):
    async def read(address: int, count: int) -> Sequence[int]:
        if address < 40000 or address + count > device.end_address:
            raise IllegalAddress(address)
        return device.read(address, count)

    return read


def _plan(device: SimulatedInverter) -> PollPlan:
    return asyncio.run(discover_plan(_fake_read(device)))


def _blocks(device: SimulatedInverter, plan: PollPlan) -> list[list[int]]:
    return [device.read(a, c) for a, c in plan.reads]


# --------------------------------------------------------------------------- schedule


def test_on_time_polls_are_due_at_start_plus_n_intervals_without_drift() -> None:
    schedule = PollSchedule(start_s=100.0, interval_s=0.2)
    dues = []
    for _n in range(1000):
        dues.append(schedule.due_s())
        # each poll starts 3 ms late: the schedule does not drift
        assert schedule.begin(schedule.due_s() + 0.003) == pytest.approx(0.003)
        schedule.finish()
    assert dues[999] == pytest.approx(100.0 + 999 * 0.2)
    assert schedule.missed == 0


def test_a_poll_late_past_its_next_slot_is_missed_and_skipped() -> None:
    schedule = PollSchedule(start_s=0.0, interval_s=0.2)
    schedule.begin(0.0)
    schedule.finish()  # slot 1 due at 0.2
    lateness = schedule.begin(0.65)  # slots 2 (0.4) and 3 (0.6) have come: serve slot 3
    assert schedule.missed == 2
    assert schedule.slot == 3
    assert lateness == pytest.approx(0.05)
    schedule.finish()
    assert schedule.due_s() == pytest.approx(0.8)


def test_late_but_before_the_next_slot_is_not_missed() -> None:
    schedule = PollSchedule(start_s=0.0, interval_s=0.2)
    assert schedule.begin(0.199) == pytest.approx(0.199)
    assert schedule.missed == 0
    assert schedule.slot == 0


def test_resume_after_an_outage_counts_nothing_missed() -> None:
    schedule = PollSchedule(start_s=0.0, interval_s=0.2, slot=5)
    schedule.resume(10.05)
    assert schedule.slot == 51
    assert schedule.missed == 0
    assert schedule.due_s() == pytest.approx(10.2)


def test_lateness_percentiles_from_the_histogram() -> None:
    stats = LatenessStats()
    for ms in [1.0] * 98 + [15.0, 250.0]:
        stats.record(ms / 1000)
    assert stats.polls == 100
    assert stats.percentile_ms(0.5) == pytest.approx(1.1)
    assert stats.percentile_ms(0.99) == pytest.approx(15.1)
    assert stats.max_ms == pytest.approx(250.0)
    assert LatenessStats().percentile_ms(0.5) is None


def test_backoff_doubles_from_initial_up_to_max() -> None:
    assert [backoff_s(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


# --------------------------------------------------------------------------- decode


def test_plan_reads_two_blocks_on_the_simulated_layout() -> None:
    device = SimulatedInverter(InverterModel(), serial="P1")
    plan = _plan(device)
    assert plan.model_map.model_ids == [1, 701, 702, 704, 711, 713]
    assert len(plan.reads) == 2
    assert plan.every_poll == 1  # 701 every poll; 704 + 713 are low priority
    assert all(count <= 125 for _a, count in plan.reads)
    assert plan.capabilities.rated_charge_w == 11_000  # 702 WChaRteMaxRtg
    assert plan.capabilities.rated_discharge_w == 11_000
    assert plan.capabilities.site_max_charge_w is None  # no site limits given


def test_capabilities_carry_the_site_limits_next_to_the_device_ratings() -> None:
    device = SimulatedInverter(InverterModel(), serial="P1")
    plan = asyncio.run(
        discover_plan(_fake_read(device), site_max_charge_w=9_000, site_max_discharge_w=5_000)
    )
    caps = plan.capabilities
    assert (caps.rated_charge_w, caps.rated_discharge_w) == (11_000, 11_000)
    assert (caps.site_max_charge_w, caps.site_max_discharge_w) == (9_000, 5_000)
    assert plan.capabilities.capacity_wh == 60_000
    assert plan.capabilities.serial == "P1"


def test_points_that_fit_one_read_are_all_read_every_poll() -> None:
    model_map = ModelMap(
        base=40000,
        models=(ModelInstance(713, 40002, 7), ModelInstance(701, 40011, 153)),
    )
    tables = {713: load_model(713), 701: load_model(701)}
    plan = build_plan(model_map, tables, {}, Capabilities(protocol="sunspec"))
    assert plan.reads == ((40006, 42),)  # 713 SoC .. 701 TmpCab
    assert plan.every_poll == 1


def test_device_without_701_is_refused() -> None:
    model_map = ModelMap(base=40000, models=(ModelInstance(713, 40002, 7),))
    with pytest.raises(DeviceError, match="701"):
        build_plan(model_map, {713: load_model(713)}, {}, Capabilities(protocol="sunspec"))


def test_discharging_inverter_reads_as_negative_power_w() -> None:
    model = InverterModel(
        ratings=InverterRatings(voltage_v=230.0),
        soc_pct=61.5,
        power_w=-4_600.0,
        energy_import_wh=1_000.4,
        energy_export_wh=2_000.9,
        setpoint_enabled=True,
        setpoint_w=-4_600.0,
    )
    device = SimulatedInverter(model, serial="P2")
    device.refresh(49.987)
    plan = _plan(device)
    reading = decode_reading(plan, _blocks(device, plan))
    assert reading.power_w == -4_600.0  # SunSpec W = +4600 (injection)
    assert reading.setpoint_w == -4_600.0
    assert reading.freq_hz == pytest.approx(49.987)
    assert reading.soc_pct == pytest.approx(61.5)
    assert reading.voltage_v == pytest.approx(230.0)
    assert reading.current_a == pytest.approx(20.0)
    assert reading.energy_import_wh == 1_000.0
    assert reading.energy_export_wh == 2_000.0
    assert (reading.status, reading.device_status) == ("discharging", "RUNNING")


def test_disabled_setpoint_is_not_reported() -> None:
    device = SimulatedInverter(InverterModel(), serial="P3")
    plan = _plan(device)
    reading = decode_reading(plan, _blocks(device, plan))
    assert reading.setpoint_w is None
    assert reading.power_w == 0.0
    assert (reading.status, reading.device_status) == ("idle", "STANDBY")


def test_not_implemented_points_decode_to_none() -> None:
    device = SimulatedInverter(InverterModel(), serial="P4")
    plan = _plan(device)
    blocks = _blocks(device, plan)
    soc = next(p for p in plan.points if p.field == "soc_pct")
    blocks[soc.block][soc.offset] = 0xFFFF
    assert decode_reading(plan, blocks).soc_pct is None


def test_telemetry_validates_against_the_contract() -> None:
    device = SimulatedInverter(InverterModel(power_w=2_000.0), serial="P5")
    device.refresh(50.01)
    plan = _plan(device)
    reading = decode_reading(plan, _blocks(device, plan))
    message = to_telemetry(reading, "site1", "inv-1", ts_ms=1_700_000_000_000, seq=7, boot="b1")
    parsed = Telemetry.model_validate_json(message.to_json())
    assert (parsed.power_w, parsed.seq, parsed.kind) == (2_000.0, 7, "inverter")
    assert (parsed.status, parsed.device_status) == ("charging", "RUNNING")
    assert parsed.freq_hz == pytest.approx(50.01)


# --------------------------------------------------------------------------- decode_data


def _as_bytes(blocks: Sequence[Sequence[int]]) -> list[bytes]:
    return [struct.pack(f">{len(b)}H", *b) for b in blocks]


def _random_blocks(plan: PollPlan, rng: random.Random) -> list[list[int]]:
    """Random registers, with each polled point now and then set to *not implemented*."""
    blocks = [[rng.randrange(0x10000) for _ in range(count)] for _address, count in plan.reads]
    for p in plan.points:
        if rng.random() < 0.2:
            blocks[p.block][p.offset : p.offset + p.size] = not_implemented(p.type, p.size)
    return blocks


def test_decode_data_equals_decode_reading_on_random_registers() -> None:
    device = SimulatedInverter(InverterModel(), serial="R1")
    plan = _plan(device)
    rng = random.Random(1547)
    for _ in range(2000):
        blocks = _random_blocks(plan, rng)
        assert decode_data(plan, _as_bytes(blocks)) == decode_reading(plan, blocks)


def test_decode_data_equals_decode_reading_without_scale_factors() -> None:
    device = SimulatedInverter(InverterModel(), serial="R2")
    real = _plan(device)
    tables = {m: load_model(m) for m in real.model_map.model_ids}
    plan = build_plan(real.model_map, tables, {}, Capabilities(protocol="sunspec"))
    rng = random.Random(2018)
    for _ in range(200):
        blocks = _random_blocks(plan, rng)
        reading = decode_data(plan, _as_bytes(blocks))
        assert reading == decode_reading(plan, blocks)
        assert reading.freq_hz is None  # no Hz_SF: the raw number means nothing


def test_points_struct_cannot_unpack_fall_back_to_the_generic_decoder() -> None:
    def point(field: str, type_: str, offset: int, size: int) -> PlannedPoint:
        return PlannedPoint(
            field=field,
            type=type_,
            block=0,
            offset=offset,
            size=size,
            sf=None,
            scaled=False,
            symbols={},
            decode=decoder(type_, size),
        )

    plan = PollPlan(
        reads=((40000, 6),),
        points=(point("temp_c", "float32", 0, 2), point("voltage_v", "uint16", 2, 1)),
        model_map=ModelMap(base=40000, models=()),
        capabilities=Capabilities(protocol="sunspec"),
        every_poll=1,
    )
    assert plan.unpacked == frozenset({"voltage_v"})
    blocks = [[*struct.unpack(">HH", struct.pack(">f", 21.5)), 230, 0, 0, 0]]
    reading = decode_data(plan, _as_bytes(blocks))
    assert reading == decode_reading(plan, blocks)
    assert (reading.temp_c, reading.voltage_v) == (21.5, 230.0)


# --------------------------------------------------------------------------- encoder


def _reading(**overrides: object) -> InverterReading:
    values: dict[str, object] = {
        "power_w": -4_600.0,
        "freq_hz": 49.987,
        "voltage_v": 230.1,
        "current_a": 20.0,
        "soc_pct": 61.5,
        "energy_import_wh": 1_000.0,
        "energy_export_wh": 2_000.0,
        "temp_c": 31.2,
        "setpoint_w": -4_600.0,
        "status": "discharging",
        "device_status": "RUNNING",
    }
    values.update(overrides)
    return InverterReading(**values)  # type: ignore[arg-type]


def _pydantic_json(reading: InverterReading, ts_ms: int, seq: int) -> bytes:
    return to_telemetry(reading, "site1", "inv-1", ts_ms=ts_ms, seq=seq, boot="b00t").to_json()


@pytest.mark.parametrize(
    "reading",
    [
        _reading(),
        _reading(power_w=0.0, setpoint_w=None, status="idle", device_status="STANDBY"),
        _reading(freq_hz=None, voltage_v=None, current_a=None, temp_c=None, status=None),
        _reading(status=None, device_status=None),
        _reading(energy_import_wh=0.0, soc_pct=100.0, temp_c=-12.5, current_a=-0.01),
        _reading(device_status='odd "state" é'),
    ],
)
def test_encoder_writes_the_bytes_pydantic_writes(reading: InverterReading) -> None:
    encoder = TelemetryEncoder("site1", "inv-1", "b00t")
    ours = encoder.encode(reading, ts_ms=1_764_000_000_123, seq=42)
    assert ours == _pydantic_json(reading, 1_764_000_000_123, 42)
    Telemetry.model_validate_json(ours)


def test_encoder_matches_pydantic_json_on_random_readings() -> None:
    encoder = TelemetryEncoder("site1", "inv-1", "b00t")
    rng = random.Random(7)

    def maybe(low: float, high: float) -> float | None:
        return None if rng.random() < 0.15 else round(rng.uniform(low, high), rng.randrange(4))

    for seq in range(500):
        reading = InverterReading(
            power_w=round(rng.uniform(-11_000, 11_000), rng.randrange(3)),
            freq_hz=maybe(45, 65),
            voltage_v=maybe(0, 1e3),
            current_a=maybe(-100, 100),
            soc_pct=maybe(0, 100),
            energy_import_wh=maybe(0, 1e13),
            energy_export_wh=maybe(0, 1e13),
            temp_c=maybe(-40, 90),
            setpoint_w=maybe(-11_000, 11_000),
            status=rng.choice([None, "charging", "discharging", "idle", "fault"]),
            device_status=rng.choice([None, "RUNNING", "STANDBY", "FAULT", "THROTTLED"]),
        )
        ours = encoder.encode(reading, ts_ms=1_764_000_000_000 + seq, seq=seq)
        theirs = _pydantic_json(reading, 1_764_000_000_000 + seq, seq)
        # same keys in the same order, same values (exponents may be spelled differently)
        assert list(json.loads(ours).items()) == list(json.loads(theirs).items())


@pytest.mark.parametrize(
    "reading",
    [
        _reading(freq_hz=0.0),
        _reading(soc_pct=100.1),
        _reading(energy_export_wh=-1.0),
        _reading(voltage_v=-0.1),
        _reading(status="running"),  # a device word, not the contract's vocabulary
    ],
)
def test_encoder_refuses_what_the_contract_refuses(reading: InverterReading) -> None:
    encoder = TelemetryEncoder("site1", "inv-1", "b00t")
    with pytest.raises(ValidationError):
        _pydantic_json(reading, 1, 1)
    with pytest.raises(ValidationError):
        encoder.encode(reading, ts_ms=1, seq=1)


def test_encoder_refuses_a_value_that_is_not_a_finite_number() -> None:
    encoder = TelemetryEncoder("site1", "inv-1", "b00t")
    with pytest.raises(ValueError, match="finite"):
        encoder.encode(_reading(power_w=math.inf), ts_ms=1, seq=1)
    with pytest.raises(ValueError, match="finite"):
        encoder.encode(_reading(temp_c=math.nan), ts_ms=1, seq=1)


def test_encoder_checks_identifiers_once_like_the_model() -> None:
    with pytest.raises(ValidationError):
        TelemetryEncoder("site 1", "inv-1", "b00t")
    with pytest.raises(ValidationError):
        TelemetryEncoder("site1", "inv-1", "")


# --------------------------------------------------------------------------- layering


def test_the_collector_imports_nothing_from_control() -> None:
    code = (
        "import sys, collectors.modbus; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'control'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"  # device writes live in control/, never in a collector
