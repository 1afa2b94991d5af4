"""The write-ahead log: records, CRC, torn tails, grouped fsync, replay and truncation."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.wal import GroupCommitter, WriteAheadLog, decode_records, encode_record, replay


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_wal(directory: Path, clock: FakeClock | None = None, **kwargs: float) -> WriteAheadLog:
    return WriteAheadLog(
        directory,
        retention_s=kwargs.get("retention_s", 30.0),
        segment_s=kwargs.get("segment_s", 5.0),
        clock=clock or FakeClock(),
    )


RECORDS = [("gridflex/v1/s1/inverter/a/telemetry", b'{"seq": 1}', 17), ("t/ack", b"", 2**40)]


def test_records_round_trip() -> None:
    data = b"".join(encode_record(*r) for r in RECORDS)
    assert decode_records(data) == (RECORDS, len(data))


@settings(max_examples=50)
@given(
    st.lists(
        st.tuples(st.text(max_size=40), st.binary(max_size=200), st.integers(0, 2**63 - 1)),
        max_size=10,
    )
)
def test_any_records_round_trip(records: list[tuple[str, bytes, int]]) -> None:
    data = b"".join(encode_record(*r) for r in records)
    assert decode_records(data) == (records, len(data))


@settings(max_examples=50)
@given(st.integers(1, 200))
def test_a_torn_last_record_is_ignored(cut: int) -> None:
    whole = b"".join(encode_record(*r) for r in RECORDS)
    first = len(encode_record(*RECORDS[0]))
    cut = min(cut, len(whole) - first - 1)
    records, consumed = decode_records(whole[: len(whole) - cut])
    assert records == RECORDS[:1]
    assert consumed == first


def test_a_record_with_a_bad_crc_ends_the_segment() -> None:
    first = encode_record(*RECORDS[0])
    second = bytearray(encode_record(*RECORDS[1]))
    second[-1 if RECORDS[1][1] else 12] ^= 0xFF  # one flipped bit in the body
    records, consumed = decode_records(first + bytes(second) + encode_record(*RECORDS[0]))
    assert records == RECORDS[:1]
    assert consumed == len(first)


def test_appended_records_are_replayed_in_order_across_segments(tmp_path: Path) -> None:
    clock = FakeClock()
    wal = make_wal(tmp_path, clock, segment_s=5.0)
    wal.append(encode_record(*RECORDS[0]), 1)
    clock.now += 6  # the next append starts a new segment
    wal.append(encode_record(*RECORDS[1]), 1)
    wal.close()
    assert len(list(tmp_path.glob("*.wal"))) == 2
    assert list(replay(tmp_path)) == RECORDS


def test_replay_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert list(replay(tmp_path / "absent")) == []


def test_replay_skips_a_torn_tail_and_keeps_later_segments(tmp_path: Path) -> None:
    wal = make_wal(tmp_path)
    wal.append(encode_record(*RECORDS[0]), 1)
    wal.close()
    first = next(tmp_path.glob("*.wal"))
    with first.open("ab") as f:
        f.write(encode_record(*RECORDS[1])[:7])  # a crash in the middle of a write
    wal = make_wal(tmp_path)  # the next run writes a new segment
    wal.append(encode_record(*RECORDS[1]), 1)
    wal.close()
    assert list(replay(tmp_path)) == RECORDS


def test_one_fsync_per_append_of_a_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    wal = make_wal(tmp_path)
    calls.clear()
    wal.append(b"".join(encode_record(*RECORDS[0]) for _ in range(100)), 100)
    assert len(calls) == 1
    assert (wal.records, wal.fsyncs) == (100, 1)
    wal.close()


def test_sealed_segments_are_deleted_once_covered(tmp_path: Path) -> None:
    clock = FakeClock()
    wal = make_wal(tmp_path, clock, retention_s=20.0, segment_s=5.0)
    for _ in range(3):
        wal.append(encode_record(*RECORDS[0]), 1)
        clock.now += 5  # each append after the first seals the previous segment
    wal.append(encode_record(*RECORDS[0]), 1)
    assert len(list(tmp_path.glob("*.wal"))) == 4
    clock.now += 9  # the first sealed segment (sealed at +5) is 19 s old: not yet covered
    wal.maintain()
    assert wal.deleted == 0
    clock.now += 1
    wal.maintain()
    assert wal.deleted == 1
    assert len(list(tmp_path.glob("*.wal"))) == 4  # the current segment was sealed meanwhile
    wal.close()


def test_segments_of_a_previous_run_get_their_grace_from_the_start(tmp_path: Path) -> None:
    old = make_wal(tmp_path)
    old.append(encode_record(*RECORDS[0]), 1)
    old.close()
    clock = FakeClock()
    wal = make_wal(tmp_path, clock, retention_s=20.0, segment_s=100.0)
    clock.now += 19
    wal.maintain()
    assert wal.deleted == 0  # the replayed rows may not be in the history yet
    clock.now += 1
    wal.maintain()
    assert wal.deleted == 1
    assert list(replay(tmp_path)) == []
    wal.close()


def test_group_committer_runs_done_after_the_records_are_on_disk(tmp_path: Path) -> None:
    wal = make_wal(tmp_path)
    committer = GroupCommitter(wal)
    seen: list[list[tuple[str, bytes, int]]] = []
    done = threading.Event()

    def check() -> None:
        seen.append(list(replay(tmp_path)))
        done.set()

    committer.submit(encode_record(*RECORDS[0]), 1, lambda: None)
    committer.submit(encode_record(*RECORDS[1]), 1, check)
    assert done.wait(10)
    committer.close()
    assert seen == [RECORDS]
    assert wal.records == 2
    assert 1 <= wal.fsyncs <= 2
