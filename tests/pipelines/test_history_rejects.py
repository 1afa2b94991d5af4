"""A row the history cannot store is set aside with its reason; the others are written."""

from __future__ import annotations

import json
from pathlib import Path

from gridflex.contract import Telemetry
from gridflex.history import connect
from pipelines.history_rejects import REJECTED_DIR
from pipelines.history_sink import ParquetStreamWriter, telemetry_row

T0 = 1_795_608_000_000


def _row(seq: int) -> dict[str, object]:
    reading = Telemetry(
        site="s1", asset="inv-1", kind="inverter", ts_ms=T0 + seq, seq=seq, boot="b1",
        power_w=100.0,
    )  # fmt: skip
    return telemetry_row(reading)


def test_an_unstorable_row_is_set_aside_and_the_rest_is_written(tmp_path: Path) -> None:
    writer = ParquetStreamWriter(tmp_path, "telemetry", ts_column="ts_ms", name="t", batch_rows=4)
    bad = _row(2) | {"seq": 2**64}  # validation refuses it; a bug could still let it by
    writer.add([_row(0), _row(1), bad, _row(3), _row(4)])
    writer.flush()

    assert writer.rejected == 1
    seqs = connect(tmp_path).execute("select seq from telemetry order by seq").fetchall()
    assert seqs == [(0,), (1,), (3,), (4,)]
    [line] = (tmp_path / REJECTED_DIR / "telemetry.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["row"]["seq"] == 2**64
    assert "Overflow" in record["reason"] or "out of bounds" in record["reason"].lower()


def test_a_batch_without_bad_rows_sets_nothing_aside(tmp_path: Path) -> None:
    writer = ParquetStreamWriter(tmp_path, "telemetry", ts_column="ts_ms", name="t")
    writer.add([_row(i) for i in range(3)])
    writer.flush()
    assert writer.rejected == 0
    assert not (tmp_path / REJECTED_DIR).exists()
