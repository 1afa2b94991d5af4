"""The idempotency ledger: verdicts, restart, duplicates at scale, threads, properties."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control.ledger import RETENTION_MS, CommandRecord, Ledger

T0 = 1_780_000_000_000  # epoch ms


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.sqlite") as led:
        yield led


def _applied(led: Ledger, asset: str, command_id: str, issued_ms: int, w: float) -> None:
    led.record(
        asset,
        command_id,
        issued_ms=issued_ms,
        result="applied",
        requested_w=w,
        applied_w=w,
        reason=None,
        now_ms=issued_ms + 5,
    )


def test_wal_mode_and_full_sync(ledger: Ledger, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert ledger._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_new_then_duplicate_returns_first_result(ledger: Ledger) -> None:
    assert ledger.check("ev1", "c1", T0, T0 + 1000, T0 + 10).verdict == "new"
    assert ledger.record(
        "ev1",
        "c1",
        issued_ms=T0,
        result="clamped",
        requested_w=-9000.0,
        applied_w=-7000.0,
        reason="clamped by rating",
        now_ms=T0 + 20,
    )
    decision = ledger.check("ev1", "c1", T0, T0 + 1000, T0 + 30)
    assert decision.verdict == "duplicate"
    assert decision.previous == CommandRecord(
        "ev1", "c1", T0, "clamped", -9000.0, -7000.0, "clamped by rating", T0 + 20
    )


def test_duplicate_for_any_asset(ledger: Ledger) -> None:
    _applied(ledger, "ev1", "c1", T0, 1000.0)
    assert ledger.check("ev2", "c1", T0, None, T0).verdict == "duplicate"


def test_duplicate_wins_over_expired_and_stale(ledger: Ledger) -> None:
    # A late redelivery of an applied command gets the first answer, not a refusal.
    _applied(ledger, "ev1", "c1", T0, 1000.0)
    _applied(ledger, "ev1", "c2", T0 + 200, 2000.0)
    decision = ledger.check("ev1", "c1", T0, T0 + 100, T0 + 10_000)
    assert decision.verdict == "duplicate"
    assert decision.previous is not None
    assert decision.previous.result == "applied"


def test_recording_twice_keeps_the_first(ledger: Ledger) -> None:
    _applied(ledger, "ev1", "c1", T0, 1000.0)
    assert not ledger.record(
        "ev1",
        "c1",
        issued_ms=T0,
        result="rejected",
        requested_w=1000.0,
        applied_w=None,
        reason="x",
        now_ms=T0 + 9,
    )
    previous = ledger.check("ev1", "c1", T0, None, T0).previous
    assert previous is not None
    assert previous.result == "applied"


@pytest.mark.parametrize(
    ("valid_until_ms", "now_ms", "verdict"),
    [
        (T0 + 1000, T0 + 1000, "new"),  # the last valid millisecond
        (T0 + 1000, T0 + 1001, "expired"),  # one past it
        (None, T0 + 10**9, "new"),  # no expiry
    ],
)
def test_expired(ledger: Ledger, valid_until_ms: int | None, now_ms: int, verdict: str) -> None:
    assert ledger.check("ev1", "c1", T0, valid_until_ms, now_ms).verdict == verdict


def test_expired_before_stale(ledger: Ledger) -> None:
    _applied(ledger, "ev1", "c1", T0, 1000.0)
    assert ledger.check("ev1", "old", T0 - 1, T0, T0 + 1).verdict == "expired"


@pytest.mark.parametrize(
    ("issued_ms", "verdict"),
    [
        (T0 - 1, "stale"),  # older than the last applied
        (T0, "new"),  # same reading, another decision: not older
        (T0 + 1, "new"),
    ],
)
def test_stale(ledger: Ledger, issued_ms: int, verdict: str) -> None:
    _applied(ledger, "ev1", "c1", T0, 1000.0)
    decision = ledger.check("ev1", "c2", issued_ms, None, T0 + 10)
    assert decision.verdict == verdict
    if verdict == "stale":
        assert decision.previous is not None
        assert decision.previous.command_id == "c1"


def test_stale_is_per_asset(ledger: Ledger) -> None:
    _applied(ledger, "ev1", "c1", T0, 1000.0)
    assert ledger.check("ev2", "c2", T0 - 1, None, T0).verdict == "new"


@pytest.mark.parametrize("result", ["rejected", "failed", "expired", "stale"])
def test_only_applied_and_clamped_move_last_applied(ledger: Ledger, result: str) -> None:
    _applied(ledger, "ev1", "c1", T0, 1000.0)
    ledger.record(
        "ev1",
        "c2",
        issued_ms=T0 + 500,
        result=result,
        requested_w=5000.0,
        applied_w=None,
        reason="max capacity reached",
        now_ms=T0 + 505,
    )
    last = ledger.last_applied("ev1")
    assert last is not None
    assert (last.command_id, last.issued_ms, last.applied_w) == ("c1", T0, 1000.0)
    # an older command than c2 but newer than c1 is still welcome
    assert ledger.check("ev1", "c3", T0 + 100, None, T0 + 600).verdict == "new"


def test_last_applied_never_goes_back(ledger: Ledger) -> None:
    _applied(ledger, "ev1", "c2", T0 + 100, 2000.0)
    _applied(ledger, "ev1", "c1", T0, 1000.0)  # recorded late, e.g. by a racing thread
    last = ledger.last_applied("ev1")
    assert last is not None
    assert last.command_id == "c2"


def test_restart_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    first = Ledger(path)
    _applied(first, "ev1", "c1", T0, -5000.0)
    first.close()
    with Ledger(path) as second:
        assert second.check("ev1", "c1", T0, None, T0).verdict == "duplicate"
        assert second.check("ev1", "c0", T0 - 1, None, T0).verdict == "stale"
        last = second.last_applied("ev1")
        assert last is not None
        assert last.applied_w == -5000.0


def test_prune_keeps_last_applied(ledger: Ledger) -> None:
    _applied(ledger, "ev1", "c1", T0, 1000.0)  # recorded at T0 + 5
    _applied(ledger, "ev1", "c2", T0 + RETENTION_MS, 2000.0)
    assert ledger.prune(now_ms=T0 + RETENTION_MS + 10) == 1
    assert ledger.check("ev1", "c1", T0, None, T0).verdict == "stale"  # forgotten, still refused
    assert ledger.check("ev1", "c2", T0, None, T0).verdict == "duplicate"
    last = ledger.last_applied("ev1")
    assert last is not None
    assert last.command_id == "c2"


@dataclass
class FakeDevice:
    """A device that holds an absolute setpoint; counts the writes."""

    setpoint_w: float = 0.0
    writes: list[float] = field(default_factory=list)

    def write(self, setpoint_w: float) -> None:
        self.setpoint_w = setpoint_w
        self.writes.append(setpoint_w)


def _handle(led: Ledger, device: FakeDevice, command_id: str, issued_ms: int, w: float) -> str:
    decision = led.check("ev1", command_id, issued_ms, issued_ms + 60_000, issued_ms + 10)
    if decision.verdict != "new":
        return decision.verdict
    device.write(w)
    _applied(led, "ev1", command_id, issued_ms, w)
    return "applied"


def test_a_thousand_copies_of_discharge_5kw_leave_the_device_at_5kw(ledger: Ledger) -> None:
    device = FakeDevice()
    verdicts = [_handle(ledger, device, "d5k", T0, -5000.0) for _ in range(1000)]
    assert verdicts.count("applied") == 1
    assert verdicts.count("duplicate") == 999
    assert device.writes == [-5000.0]
    assert device.setpoint_w == -5000.0


def test_two_threads_record_each_id_once(ledger: Ledger) -> None:
    ids = [f"c{i}" for i in range(200)]
    recorded: list[list[str]] = [[], []]
    barrier = threading.Barrier(2)

    def worker(slot: int) -> None:
        barrier.wait()
        for i, command_id in enumerate(ids):
            if ledger.record(
                "ev1",
                command_id,
                issued_ms=T0 + i,
                result="applied",
                requested_w=float(i),
                applied_w=float(i),
                reason=None,
                now_ms=T0 + i,
            ):
                recorded[slot].append(command_id)

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(recorded[0] + recorded[1]) == sorted(ids)
    count = ledger._conn.execute("SELECT COUNT(*) FROM command").fetchone()[0]
    assert count == len(ids)
    last = ledger.last_applied("ev1")
    assert last is not None
    assert last.issued_ms == T0 + 199


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d", "e", "f"]),
            st.integers(min_value=0, max_value=20),
            st.sampled_from(["ev1", "ev2"]),
            st.sampled_from(["applied", "clamped", "rejected"]),
        ),
        max_size=40,
    )
)
def test_no_id_is_new_twice_and_last_applied_never_decreases(
    tmp_path_factory: pytest.TempPathFactory,
    sequence: list[tuple[str, int, str, str]],
) -> None:
    with Ledger(tmp_path_factory.mktemp("ledger") / "ledger.sqlite") as led:
        seen_new: set[str] = set()
        last_issued: dict[str, int] = {}
        for command_id, issued_offset_ms, asset, result in sequence:
            issued_ms = T0 + issued_offset_ms
            decision = led.check(asset, command_id, issued_ms, None, issued_ms)
            if decision.verdict == "new":
                assert command_id not in seen_new
                seen_new.add(command_id)
                led.record(
                    asset,
                    command_id,
                    issued_ms=issued_ms,
                    result=result,
                    requested_w=1.0,
                    applied_w=None if result == "rejected" else 1.0,
                    reason=None,
                    now_ms=issued_ms,
                )
            last = led.last_applied(asset)
            if last is not None:
                assert last.issued_ms >= last_issued.get(asset, last.issued_ms)
                last_issued[asset] = last.issued_ms


def test_group_commit_records_a_burst_in_few_transactions(tmp_path: Path) -> None:
    """A burst of records from the loop: every one stored, in a few commits, dups refused."""

    def entry(i: int) -> CommandRecord:
        return CommandRecord(
            asset=f"a{i % 50}",
            command_id=f"c{i}",
            issued_ms=i,
            result="applied",
            requested_w=float(i),
            applied_w=float(i),
            reason=None,
            recorded_ms=1_000 + i,
        )

    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        batches: list[int] = []
        inner = ledger.record_many

        def counting(entries: Any) -> list[bool]:
            batches.append(len(entries))
            return inner(entries)

        ledger.record_many = counting  # type: ignore[method-assign]

        async def burst() -> list[bool]:
            entries = [entry(i) for i in range(500)] + [entry(7)]  # the last is a repeat
            return list(await asyncio.gather(*(ledger.record_async(e) for e in entries)))

        results = asyncio.run(burst())
    assert results == [True] * 500 + [False]
    assert sum(batches) == 501 and len(batches) < 50
    with Ledger(tmp_path / "ledger.sqlite3") as again:
        last = again.last_applied("a49")
        assert last is not None and last.command_id == "c499"


def test_record_many_with_an_id_already_there_keeps_the_first_and_records_the_others(
    tmp_path: Path,
) -> None:
    def entry(command_id: str, issued_ms: int, applied_w: float) -> CommandRecord:
        return CommandRecord("a1", command_id, issued_ms, "applied", applied_w, applied_w,
                             None, issued_ms)  # fmt: skip

    with Ledger(tmp_path / "ledger.sqlite3") as ledger:
        assert ledger.record_many([entry("c1", 10, 1.0)]) == [True]
        batch = [entry("c2", 20, 2.0), entry("c1", 30, 9.0), entry("c3", 40, 3.0)]
        assert ledger.record_many(batch) == [True, False, True]  # row by row: which was new
    with Ledger(tmp_path / "ledger.sqlite3") as again:
        first = again.check("a1", "c1", 30, None, 50)
        assert first.verdict == "duplicate" and first.previous is not None
        assert first.previous.applied_w == 1.0  # the first record of c1 stays
        assert again.check("a1", "c2", 20, None, 50).verdict == "duplicate"
        last = again.last_applied("a1")
        assert last is not None and (last.command_id, last.applied_w) == ("c3", 3.0)
