"""Parquet history sink: rows, de-duplication, atomic files, flush policy."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridflex.contract import DispatchAck, Telemetry
from gridflex.history import ACKS_SCHEMA, TELEMETRY_SCHEMA, connect
from pipelines import history_sink
from pipelines.history_sink import (
    HistorySink,
    ParquetStreamWriter,
    RecentAcks,
    RecentKeys,
    ack_row,
    telemetry_row,
    write_parquet_atomic,
)
from tests.pipelines.helpers import T0_MS, ack, telemetry


def row(asset: str, seq: int, ts_ms: int = T0_MS, boot: str = "b1") -> dict[str, Any]:
    return telemetry_row(Telemetry.model_validate(telemetry(asset, ts_ms, seq, boot=boot)))


def finished_files(root: Path) -> list[Path]:
    return sorted(root.rglob("part-*.parquet"))


def test_telemetry_row_has_every_schema_column_and_flattens_ev_needs() -> None:
    reading = Telemetry.model_validate(
        telemetry(
            "cs-1",
            T0_MS,
            3,
            kind="evse",
            freq_hz=None,
            ev={"departure_ms": T0_MS + 3_600_000, "target_soc_pct": 80, "v2x": True},
        )
    )
    out = telemetry_row(reading)
    assert list(out) == TELEMETRY_SCHEMA.names
    assert (out["ev_departure_ms"], out["ev_target_soc_pct"], out["ev_v2x"]) == (
        T0_MS + 3_600_000,
        80,
        True,
    )
    assert out["freq_hz"] is None and out["ev_min_soc_pct"] is None


def test_recent_keys_flags_a_redelivery_of_the_same_asset_boot_seq() -> None:
    keys = RecentKeys(capacity=8)
    assert not keys.seen_before("a", "b1", 1)
    assert keys.seen_before("a", "b1", 1)
    assert not keys.seen_before("a", "b2", 1)  # a new boot restarts seq
    assert not keys.seen_before("other", "b1", 1)  # per asset


def test_recent_keys_forgets_the_oldest_beyond_its_capacity() -> None:
    keys = RecentKeys(capacity=3)
    for seq in range(4):
        keys.seen_before("a", "b1", seq)
    assert not keys.seen_before("a", "b1", 0)  # evicted: too old to tell
    assert keys.seen_before("a", "b1", 3)


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "telemetry" / "date=2023-11-14" / "part-x.parquet"
    table = history_sink.pa.Table.from_pylist([row("a", 1)], schema=TELEMETRY_SCHEMA)
    write_parquet_atomic(table, path)
    assert [p.name for p in path.parent.iterdir()] == ["part-x.parquet"]
    assert pq.read_table(path).num_rows == 1
    assert pq.read_metadata(path).row_group(0).column(0).compression == "ZSTD"


def test_no_partial_file_is_visible_under_the_final_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "telemetry" / "date=2023-11-14" / "part-x.parquet"
    seen_at_rename: list[list[str]] = []
    real_replace = Path.replace

    def spy_replace(self: Path, target: Any) -> Any:
        # At the moment of the rename the data is complete under a hidden name, and the
        # final name does not exist yet.
        seen_at_rename.append(sorted(p.name for p in path.parent.iterdir()))
        assert pq.read_table(self).num_rows == 2
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", spy_replace)
    table = history_sink.pa.Table.from_pylist([row("a", 1), row("a", 2)], schema=TELEMETRY_SCHEMA)
    write_parquet_atomic(table, path)
    (names,) = seen_at_rename
    assert len(names) == 1 and names[0].startswith(".part-x.parquet.") and names[0].endswith(".tmp")
    assert path.exists()


def test_a_failed_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_write(table: Any, where: Any, **kw: Any) -> None:
        where.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(history_sink.pq, "write_table", broken_write)
    path = tmp_path / "telemetry" / "date=2023-11-14" / "part-x.parquet"
    table = history_sink.pa.Table.from_pylist([row("a", 1)], schema=TELEMETRY_SCHEMA)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(table, path)
    assert list(path.parent.iterdir()) == []


def test_temporary_names_are_ignored_by_the_views(tmp_path: Path) -> None:
    writer = ParquetStreamWriter(tmp_path, "telemetry", ts_column="ts_ms", name="t")
    writer.add([row("a", 1), row("a", 2)])
    writer.flush()
    part = finished_files(tmp_path)[0].parent
    (part / ".part-t-deadbeef-000002.parquet.1234abcd.tmp").write_bytes(b"PAR1 half a file")
    assert connect(tmp_path).execute("select count(*) from telemetry").fetchall() == [(2,)]


def test_writer_flushes_when_the_row_limit_is_reached(tmp_path: Path) -> None:
    writer = ParquetStreamWriter(tmp_path, "telemetry", ts_column="ts_ms", name="t", flush_rows=3)
    writer.add([row("a", 1), row("a", 2)])
    assert finished_files(tmp_path) == []
    writer.add([row("a", 3)])
    assert len(finished_files(tmp_path)) == 1
    assert writer.buffered == 0


def test_writer_flushes_rows_older_than_the_interval(tmp_path: Path) -> None:
    now = [100.0]
    writer = ParquetStreamWriter(
        tmp_path,
        "telemetry",
        ts_column="ts_ms",
        name="t",
        flush_interval_s=5.0,
        clock=lambda: now[0],
    )
    writer.add([row("a", 1)])
    now[0] += 4.9
    assert not writer.due()
    now[0] += 0.1
    assert writer.due()
    writer.add([])
    assert len(finished_files(tmp_path)) == 1


def test_rows_across_midnight_go_to_their_own_utc_date(tmp_path: Path) -> None:
    midnight_ms = 1_700_006_400_000  # 2023-11-15T00:00:00Z
    writer = ParquetStreamWriter(tmp_path, "telemetry", ts_column="ts_ms", name="t")
    writer.add([row("a", 1, ts_ms=midnight_ms - 1), row("a", 2, ts_ms=midnight_ms)])
    writer.flush()
    dates = [p.parent.name for p in finished_files(tmp_path)]
    assert dates == ["date=2023-11-14", "date=2023-11-15"]


def test_sink_partition_drops_redeliveries_and_flushes_on_close(tmp_path: Path) -> None:
    sink = HistorySink(tmp_path, "telemetry", flush_interval_s=60)
    (part_name,) = sink.list_parts()
    part = sink.build_part("history_telemetry", part_name, None)
    part.write_batch([row("a", 1), row("a", 2), row("b", 1)])
    part.write_batch([row("a", 2), row("a", 3)])  # a/2 redelivered
    assert finished_files(tmp_path) == []  # still buffered
    part.close()
    table = pq.read_table(finished_files(tmp_path))
    assert sorted(zip(table["asset"].to_pylist(), table["seq"].to_pylist(), strict=True)) == [
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ("b", 1),
    ]


def test_sink_partition_writes_outside_the_dataflow_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: list[str] = []
    real_write = history_sink.write_parquet_atomic

    def spy(table: Any, path: Path) -> None:
        writers.append(threading.current_thread().name)
        real_write(table, path)

    monkeypatch.setattr(history_sink, "write_parquet_atomic", spy)
    sink = HistorySink(tmp_path, "telemetry", flush_rows=3, flush_interval_s=60)
    part = sink.build_part("history_telemetry", sink.list_parts()[0], None)
    part.write_batch([row("a", 1), row("a", 2), row("a", 3)])  # a full buffer
    deadline = time.monotonic() + 10
    while not finished_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    part.close()
    assert len(finished_files(tmp_path)) == 1
    assert writers and threading.current_thread().name not in writers


def test_a_failed_background_write_fails_the_dataflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(table: Any, path: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(history_sink, "write_parquet_atomic", broken)
    sink = HistorySink(tmp_path, "telemetry", flush_interval_s=60)
    part = sink.build_part("history_telemetry", sink.list_parts()[0], None)
    part.write_batch([row("a", 1)])
    with pytest.raises(RuntimeError, match="write failed"):
        part.close()


def test_sink_routes_a_key_to_the_same_partition_every_time() -> None:
    sink = HistorySink("unused", "telemetry", partitions=4)
    assert sink.part_fn("inv-7") == sink.part_fn("inv-7")
    assert len(sink.list_parts()) == 4


def test_sink_refuses_an_unknown_stream() -> None:
    with pytest.raises(ValueError, match="unknown history stream"):
        HistorySink("unused", "prices")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["b1", "b2", "b3"]), st.integers(0, 40)), max_size=120))
def test_recent_keys_match_a_reference_memory(keys: list[tuple[str, int]]) -> None:
    # Reference: per boot, a key is a duplicate when it was seen and lies within the last
    # `capacity` numbers below the highest seen; only the two latest boots are remembered.
    capacity = 8
    memory = RecentKeys(capacity=capacity)
    seen: dict[str, set[int]] = {}
    for boot, seq in keys:
        known = seen.get(boot)
        top = max(known) if known else None
        expected = known is not None and seq in known and top is not None and top - seq < capacity
        assert memory.seen_before("a", boot, seq) == expected
        if known is None:
            if len(seen) >= RecentKeys.BOOTS:
                del seen[next(iter(seen))]
            seen[boot] = {seq}
        else:
            known.add(seq)


def test_rows_gathered_over_several_record_batches_are_written_in_order(tmp_path: Path) -> None:
    writer = ParquetStreamWriter(tmp_path, "telemetry", ts_column="ts_ms", name="t", batch_rows=3)
    writer.buffer([row("a", seq) for seq in range(8)])
    assert writer.buffered == 8
    (path,) = writer.flush()
    assert pq.read_table(path).column("seq").to_pylist() == list(range(8))
    assert writer.buffered == 0


# --------------------------------------------------------------------------- acks


def an_ack_row(asset: str, command_id: str, **kw: Any) -> dict[str, Any]:
    return ack_row(DispatchAck.model_validate(ack(asset, command_id, **kw)))


def test_ack_row_has_every_schema_column_with_rules_as_a_list() -> None:
    out = an_ack_row("inv-1", "c1", result="clamped", rules=["soc_min", "ramp"], applied_w=-100.0)
    assert list(out) == ACKS_SCHEMA.names
    assert out["rules"] == ["soc_min", "ramp"]
    assert (out["result"], out["requested_w"], out["applied_w"]) == ("clamped", -656.0, -100.0)
    assert out["latency_from_telemetry_ms"] == 60


def test_ack_row_of_an_ack_without_a_write_has_null_values() -> None:
    out = an_ack_row(
        "inv-1",
        "c1",
        result="stale",
        applied_w=None,
        readback_w=None,
        latency_from_issued_ms=None,
        latency_from_telemetry_ms=None,
    )
    assert out["applied_w"] is None and out["latency_from_telemetry_ms"] is None
    assert out["rules"] == []


def test_recent_acks_flag_a_redelivery_but_keep_another_result_or_time() -> None:
    acks = RecentAcks(capacity=8)
    assert not acks.seen_before("a", "c1", "applied", T0_MS)
    assert acks.seen_before("a", "c1", "applied", T0_MS)  # the broker redelivered it
    assert not acks.seen_before("a", "c1", "duplicate", T0_MS + 5)  # a second delivery
    assert not acks.seen_before("a", "c1", "duplicate", T0_MS + 9)  # and a third
    assert not acks.seen_before("b", "c1", "applied", T0_MS)  # another asset


def test_recent_acks_forget_the_oldest_beyond_their_capacity() -> None:
    acks = RecentAcks(capacity=2)
    for i in range(3):
        assert not acks.seen_before("a", f"c{i}", "applied", T0_MS + i)
    assert not acks.seen_before("a", "c0", "applied", T0_MS)  # forgotten
    assert acks.seen_before("a", "c2", "applied", T0_MS + 2)


def test_ack_sink_drops_redelivered_acks_and_keeps_later_duplicates(tmp_path: Path) -> None:
    sink = HistorySink(tmp_path, "acks", flush_interval_s=60)
    part = sink.build_part("history_acks", sink.list_parts()[0], None)
    first = an_ack_row("a", "c1")
    part.write_batch([first, an_ack_row("b", "c2")])
    part.write_batch([first, an_ack_row("a", "c1", result="duplicate", ts_ms=T0_MS + 900)])
    part.close()
    table = pq.read_table(finished_files(tmp_path))
    assert sorted(zip(table["asset"].to_pylist(), table["result"].to_pylist(), strict=True)) == [
        ("a", "applied"),
        ("a", "duplicate"),
        ("b", "applied"),
    ]
    assert table.schema.field("rules").type == ACKS_SCHEMA.field("rules").type
