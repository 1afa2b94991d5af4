"""The setpoint writer with a fake device: every result, idempotency, order, latencies."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from control.clamp import UNLIMITED_SITE, Limits, SiteHeadroom
from control.ledger import Ledger
from control.writer import PreviousSetpoint, ReadBackError, apply_command
from gridflex.contract import DispatchAck, DispatchCommand, parse_payload

T0 = 1_780_000_000_000  # epoch ms
LIMITS = Limits(max_charge_w=11_000.0, max_discharge_w=11_000.0, soc_min_pct=20, soc_max_pct=90)


@dataclass
class FakeDevice:
    """Holds a setpoint, counts writes; can fail on write or read-back, or read back wrong."""

    clock: Clock
    setpoint_w: float = 0.0
    writes: list[float] = field(default_factory=list)
    fail_write: Exception | None = None
    fail_read: Exception | None = None
    readback_offset_w: float = 0.0
    write_ms: int = 30  # a write takes 30 ms on the injected clock

    async def write(self, setpoint_w: float) -> None:
        self.clock.advance(self.write_ms)
        if self.fail_write is not None:
            raise self.fail_write
        self.writes.append(setpoint_w)
        self.setpoint_w = setpoint_w

    async def read_back(self) -> float:
        self.clock.advance(10)
        if self.fail_read is not None:
            raise self.fail_read
        return self.setpoint_w + self.readback_offset_w


@dataclass
class Clock:
    now: int = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.sqlite") as led:
        yield led


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def device(clock: Clock) -> FakeDevice:
    return FakeDevice(clock)


def command(
    command_id: str = "c1", setpoint_w: float = -5_000.0, issued_ms: int = T0 - 50, **kw: Any
) -> DispatchCommand:
    values: dict[str, Any] = {
        "site": "site1",
        "asset": "inv1",
        "ts_ms": issued_ms - 200,  # the reading was taken 200 ms before the pipeline got it
        "seq": 7,
        "command_id": command_id,
        "issued_ms": issued_ms,
        "setpoint_w": setpoint_w,
        "valid_until_ms": issued_ms + 5_000,
        "mode": "droop",
        "reason": "droop f=49.800 Hz",
    }
    values.update(kw)
    return DispatchCommand(**values)


def apply(
    cmd: DispatchCommand,
    ledger: Ledger,
    device: FakeDevice,
    *,
    soc_pct: float | None = 50.0,
    faulted: str | None = None,
    site: SiteHeadroom = UNLIMITED_SITE,
    limits: Limits = LIMITS,
    previous: PreviousSetpoint | None = None,
) -> DispatchAck:
    ack = asyncio.run(
        apply_command(
            cmd,
            ledger=ledger,
            device=device,
            limits=limits,
            site_headroom=site,
            soc_pct=soc_pct,
            faulted=faulted,
            now_ms=device.clock,
            previous=previous,
        )
    )
    # every ack is a valid ack/1 on the wire
    assert parse_payload(ack.to_json()) == ack
    return ack


# ------------------------------------------------------------------- one row per result


def test_applied(ledger: Ledger, device: FakeDevice) -> None:
    ack = apply(command(), ledger, device)
    assert (ack.result, ack.applied_w, ack.readback_w, ack.rules) == (
        "applied",
        -5_000.0,
        -5_000.0,
        [],
    )
    assert (ack.requested_w, ack.reason, ack.seq, ack.command_id) == (-5_000.0, None, 7, "c1")
    assert device.writes == [-5_000.0]
    last = ledger.last_applied("inv1")
    assert last is not None and (last.command_id, last.applied_w) == ("c1", -5_000.0)


def test_clamped_by_rating(ledger: Ledger, device: FakeDevice) -> None:
    ack = apply(command(setpoint_w=-20_000.0), ledger, device)
    assert (ack.result, ack.applied_w, ack.readback_w) == ("clamped", -11_000.0, -11_000.0)
    assert ack.rules == ["rating"] and ack.reason == "clamped by rating"
    assert device.writes == [-11_000.0]


def test_a_fault_forces_zero_even_when_5_kw_is_asked(ledger: Ledger, device: FakeDevice) -> None:
    device.setpoint_w = -5_000.0
    ack = apply(command(setpoint_w=-5_000.0), ledger, device, faulted="Grid_Sync_Error")
    assert (ack.result, ack.applied_w, ack.readback_w) == ("clamped", 0.0, 0.0)
    assert ack.rules == ["fault"] and ack.reason == "Grid_Sync_Error"
    assert device.writes == [0.0] and device.setpoint_w == 0.0


def test_rejected_by_the_site_writes_nothing(ledger: Ledger, device: FakeDevice) -> None:
    site = SiteHeadroom(import_w=None, export_w=2_000.0)
    ack = apply(command(), ledger, device, site=site)
    assert (ack.result, ack.applied_w, ack.readback_w) == ("rejected", None, None)
    assert ack.reason == "max capacity reached" and ack.rules == ["site"]
    assert ack.latency_from_issued_ms is None and device.writes == []
    # recorded: a redelivery gets the same answer even after the headroom came back
    again = apply(command(), ledger, device)
    assert (again.result, again.reason) == ("duplicate", "already handled: rejected")
    assert device.writes == [] and ledger.last_applied("inv1") is None


def test_max_capacity_reached_is_logged_with_its_fault_code(
    ledger: Ledger, device: FakeDevice, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="control.writer"):
        apply(command(), ledger, device, site=SiteHeadroom(import_w=None, export_w=2_000.0))
    (record,) = [r for r in caplog.records if getattr(r, "fault_code", None)]
    assert (record.asset, record.event, record.fault_code) == (  # type: ignore[attr-defined]
        "inv1",
        "limit",
        "Max Capacity Reached",
    )


def test_duplicate_answers_with_the_first_result(ledger: Ledger, device: FakeDevice) -> None:
    apply(command(setpoint_w=-20_000.0), ledger, device)
    ack = apply(command(setpoint_w=-20_000.0), ledger, device)
    assert (ack.result, ack.applied_w, ack.readback_w) == ("duplicate", -11_000.0, None)
    assert ack.reason == "already handled: clamped"
    assert device.writes == [-11_000.0]


def test_expired(ledger: Ledger, device: FakeDevice, clock: Clock) -> None:
    ack = apply(command(valid_until_ms=clock.now - 1), ledger, device)
    assert (ack.result, ack.applied_w) == ("expired", None)
    assert ack.reason == f"valid until {clock.now - 1}, now {clock.now}"
    assert device.writes == []


def test_reordered_commands_older_after_newer_is_stale(ledger: Ledger, device: FakeDevice) -> None:
    newer = apply(command("new", -3_000.0, issued_ms=T0 - 10), ledger, device)
    older = apply(command("old", -4_000.0, issued_ms=T0 - 20), ledger, device)
    assert newer.result == "applied"
    assert (older.result, older.applied_w) == ("stale", None)
    assert older.reason == f"issued before new (issued_ms {T0 - 10})"
    assert device.writes == [-3_000.0] and device.setpoint_w == -3_000.0


def test_same_issued_ms_is_not_stale(ledger: Ledger, device: FakeDevice) -> None:
    apply(command("a", -3_000.0), ledger, device)
    assert apply(command("b", -4_000.0), ledger, device).result == "applied"


# ------------------------------------------------------------------- failures and retry


def test_write_failure_is_failed_and_the_same_id_may_be_retried(
    ledger: Ledger, device: FakeDevice
) -> None:
    device.fail_write = ConnectionError("Modbus timeout")
    ack = apply(command(), ledger, device)
    assert (ack.result, ack.applied_w, ack.readback_w) == ("failed", None, None)
    assert ack.reason == "write: ConnectionError: Modbus timeout"
    assert ack.latency_from_issued_ms is None
    assert ledger.last_applied("inv1") is None
    device.fail_write = None
    retry = apply(command(), ledger, device)
    assert (retry.result, retry.applied_w) == ("applied", -5_000.0)
    assert device.writes == [-5_000.0]


def test_read_back_failure_is_failed_with_the_value_written(
    ledger: Ledger, device: FakeDevice
) -> None:
    device.fail_read = TimeoutError()
    ack = apply(command(), ledger, device)
    assert (ack.result, ack.applied_w, ack.readback_w) == ("failed", -5_000.0, None)
    assert ack.reason == "read-back: TimeoutError"
    device.fail_read = None
    assert apply(command(), ledger, device).result == "applied"
    assert device.writes == [-5_000.0, -5_000.0]  # the same absolute value twice: harmless


def test_a_device_that_reads_back_another_value_failed(ledger: Ledger, device: FakeDevice) -> None:
    device.readback_offset_w = 500.0
    ack = apply(command(), ledger, device)
    assert (ack.result, ack.applied_w, ack.readback_w) == ("failed", -5_000.0, -4_500.0)
    assert ack.reason == "read back -4500 W after writing -5000 W"
    assert ledger.last_applied("inv1") is None


def test_rounding_within_the_tolerance_is_applied(ledger: Ledger, device: FakeDevice) -> None:
    device.readback_offset_w = 4.0  # WSet_SF = 1 stores tens of watts
    ack = apply(command(setpoint_w=-5_004.0), ledger, device)
    assert (ack.result, ack.applied_w, ack.readback_w) == ("applied", -5_004.0, -5_000.0)


# ------------------------------------------------------------------- idempotency at scale


def test_a_thousand_copies_of_discharge_5_kw_write_once(ledger: Ledger, device: FakeDevice) -> None:
    acks = [apply(command(), ledger, device) for _ in range(1_000)]
    assert device.writes == [-5_000.0] and device.setpoint_w == -5_000.0
    assert acks[0].result == "applied"
    assert {(a.result, a.applied_w) for a in acks[1:]} == {("duplicate", -5_000.0)}


# ------------------------------------------------------------------- ramp and latencies


def test_ramp_from_the_previous_confirmed_setpoint(
    ledger: Ledger, device: FakeDevice, clock: Clock
) -> None:
    limits = Limits(11_000.0, 11_000.0, 20, 90, ramp_w_per_s=1_000.0)
    previous = PreviousSetpoint(setpoint_w=-1_000.0, at_ms=clock.now - 2_000)
    ack = apply(command(), ledger, device, limits=limits, previous=previous)
    # 2 s at 1 kW/s from -1 kW: -3 kW, not -5 kW
    assert (ack.result, ack.applied_w, ack.rules) == ("clamped", -3_000.0, ["ramp"])


def test_latencies_from_the_injected_clock(ledger: Ledger, device: FakeDevice) -> None:
    # issued 50 ms before the writer's clock, the reading 200 ms before that; the write
    # takes 30 ms and the read-back 10 ms: confirmed at T0 + 40
    ack = apply(command(issued_ms=T0 - 50), ledger, device)
    assert ack.ts_ms == T0 + 40 and ack.issued_ms == T0 - 50
    assert ack.latency_from_issued_ms == 90
    assert ack.latency_from_telemetry_ms == 290


def test_refusals_are_acked_at_the_decision(
    ledger: Ledger, device: FakeDevice, clock: Clock
) -> None:
    ack = apply(command(valid_until_ms=T0 - 1), ledger, device)
    assert ack.ts_ms == clock.now == T0
    assert ack.latency_from_issued_ms is None and ack.latency_from_telemetry_ms is None


@dataclass
class OneTripDevice(FakeDevice):
    """A ``FakeDevice`` that also writes and reads back in one round trip (Modbus 23)."""

    trips: int = 0
    fail_trip: Exception | None = None

    async def write(self, setpoint_w: float) -> None:
        raise AssertionError("a device with write_read_back is not written separately")

    async def read_back(self) -> float:
        raise AssertionError("a device with write_read_back is not read separately")

    async def write_read_back(self, setpoint_w: float) -> float:
        self.clock.advance(self.write_ms)
        self.trips += 1
        if self.fail_trip is not None:
            raise self.fail_trip
        self.writes.append(setpoint_w)
        self.setpoint_w = setpoint_w
        return setpoint_w + self.readback_offset_w


@pytest.mark.parametrize(
    ("error", "applied_w", "reason"),
    [
        (None, -5_000.0, None),
        (TimeoutError(), None, "write: TimeoutError"),  # maybe written: nothing claimed
        (ReadBackError("no setpoint"), -5_000.0, "read-back: ReadBackError: no setpoint"),
    ],
    ids=["applied", "write failed", "read-back failed"],
)
def test_a_device_with_one_round_trip_is_written_once_per_command_through_it(
    ledger: Ledger, clock: Clock, error: Exception | None, applied_w: float | None,
    reason: str | None,
) -> None:  # fmt: skip
    device = OneTripDevice(clock, fail_trip=error)
    ack = apply(command(), ledger, device)
    assert device.trips == 1
    assert (ack.applied_w, ack.reason) == (applied_w, reason)
    if error is None:
        assert (ack.result, ack.readback_w, ack.latency_from_issued_ms) == ("applied", -5_000.0, 80)
        assert apply(command(), ledger, device).result == "duplicate" and device.trips == 1
    else:
        assert ack.result == "failed" and ledger.last_applied("inv1") is None
