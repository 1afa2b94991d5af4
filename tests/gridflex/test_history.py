"""DuckDB views over the Parquet history and the ``gridflex query`` command."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gridflex import cli
from gridflex.history import (
    ACKS_SCHEMA,
    SCHEMAS,
    STREAMS,
    TELEMETRY_SCHEMA,
    connect,
    partition_dir,
    refresh_views,
    utc_date,
)

T0_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def telemetry_row(asset: str, seq: int, *, boot: str = "b1", ts_ms: int = T0_MS, **kw: Any) -> dict:
    base: dict[str, Any] = dict.fromkeys(TELEMETRY_SCHEMA.names)
    base.update(
        site="s1", asset=asset, kind="inverter", ts_ms=ts_ms, seq=seq, boot=boot, power_w=-1000.0
    )
    base.update(kw)
    return base


def frequency_row(window_start_ms: int, mean_hz: float, samples: int) -> dict:
    return {
        "site": "s1",
        "window_start_ms": window_start_ms,
        "window_end_ms": window_start_ms + 1000,
        "nominal_hz": 50.0,
        "mean_hz": mean_hz,
        "min_hz": mean_hz,
        "max_hz": mean_hz,
        "deviation_hz": mean_hz - 50.0,
        "rocof_hz_per_s": 0.0,
        "samples": samples,
        "assets": 1,
    }


def ack_row(asset: str, command_id: str, *, ts_ms: int = T0_MS + 60, **kw: Any) -> dict:
    base: dict[str, Any] = dict.fromkeys(ACKS_SCHEMA.names)
    base.update(
        site="s1",
        asset=asset,
        ts_ms=ts_ms,
        seq=1,
        command_id=command_id,
        result="applied",
        requested_w=-656.0,
        applied_w=-656.0,
        readback_w=-656.0,
        rules=[],
        issued_ms=T0_MS + 10,
        latency_from_issued_ms=ts_ms - T0_MS - 10,
        latency_from_telemetry_ms=ts_ms - T0_MS,
    )
    base.update(kw)
    return base


def write(root: Path, stream: str, name: str, rows: list[dict]) -> None:
    schema = SCHEMAS[stream]
    ts = "window_start_ms" if stream == "grid_frequency" else "ts_ms"
    folder = partition_dir(root, stream, utc_date(rows[0][ts]))
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / f"part-{name}.parquet")


def test_views_exist_with_typed_columns_when_there_is_no_file(tmp_path: Path) -> None:
    con = connect(tmp_path / "missing")
    assert con.execute("select count(*) from telemetry").fetchall() == [(0,)]
    assert con.execute("select count(*) from grid_frequency").fetchall() == [(0,)]
    types = dict(
        con.execute("select column_name, column_type from (describe telemetry)").fetchall()
    )
    assert types["ts"] == "TIMESTAMP WITH TIME ZONE"
    assert (types["ts_ms"], types["power_w"], types["asset"]) == ("BIGINT", "DOUBLE", "VARCHAR")
    freq_types = dict(
        con.execute("select column_name, column_type from (describe grid_frequency)").fetchall()
    )
    assert freq_types["window_start"] == "TIMESTAMP WITH TIME ZONE"
    assert freq_types["samples"] == "BIGINT"


def test_views_have_the_same_columns_with_and_without_files(tmp_path: Path) -> None:
    empty = connect(tmp_path)
    write(tmp_path, "telemetry", "1", [telemetry_row("a", 1)])
    write(tmp_path, "grid_frequency", "1", [frequency_row(T0_MS, 50.0, 5)])
    write(tmp_path, "acks", "1", [ack_row("a", "c1", rules=["ramp"])])
    full = connect(tmp_path)
    for view in ("telemetry", "grid_frequency", "acks"):
        q = f"select column_name, column_type from (describe {view})"
        assert empty.execute(q).fetchall() == full.execute(q).fetchall()


def test_telemetry_view_removes_redeliveries_across_files(tmp_path: Path) -> None:
    write(tmp_path, "telemetry", "1", [telemetry_row("a", 1), telemetry_row("a", 2)])
    write(tmp_path, "telemetry", "2", [telemetry_row("a", 2), telemetry_row("a", 3)])
    write(tmp_path, "telemetry", "3", [telemetry_row("a", 2, boot="b2")])  # new boot: kept
    con = connect(tmp_path)
    rows = con.execute("select boot, seq from telemetry order by boot, seq").fetchall()
    assert rows == [("b1", 1), ("b1", 2), ("b1", 3), ("b2", 2)]


def test_files_written_before_device_status_read_it_as_null(tmp_path: Path) -> None:
    old_schema = TELEMETRY_SCHEMA.remove(TELEMETRY_SCHEMA.get_field_index("device_status"))
    old_row = {
        k: v for k, v in telemetry_row("a", 1, status="idle").items() if k in old_schema.names
    }
    folder = partition_dir(tmp_path, "telemetry", utc_date(T0_MS))
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([old_row], schema=old_schema), folder / "part-0.parquet")
    query = "select seq, status, device_status from telemetry order by seq"
    assert connect(tmp_path).execute(query).fetchall() == [(1, "idle", None)]
    write(
        tmp_path, "telemetry", "1", [telemetry_row("a", 2, status="idle", device_status="STANDBY")]
    )
    rows = connect(tmp_path).execute(query).fetchall()
    assert rows == [(1, "idle", None), (2, "idle", "STANDBY")]


def test_ts_is_the_utc_instant_of_ts_ms(tmp_path: Path) -> None:
    write(tmp_path, "telemetry", "1", [telemetry_row("a", 1, ts_ms=T0_MS + 123)])
    ((ts, day),) = connect(tmp_path).execute("select ts, date from telemetry").fetchall()
    assert ts == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert str(day) == "2023-11-14"


def test_grid_frequency_view_keeps_the_fuller_copy_of_a_window(tmp_path: Path) -> None:
    # A restart cuts a window in two: 2 samples before the stop, 3 after.
    write(tmp_path, "grid_frequency", "1", [frequency_row(T0_MS, 49.9, 2)])
    write(tmp_path, "grid_frequency", "2", [frequency_row(T0_MS, 49.8, 3)])
    write(tmp_path, "grid_frequency", "3", [frequency_row(T0_MS + 1000, 50.0, 5)])
    rows = (
        connect(tmp_path)
        .execute("select window_start_ms, mean_hz, samples from grid_frequency order by 1")
        .fetchall()
    )
    assert rows == [(T0_MS, 49.8, 3), (T0_MS + 1000, 50.0, 5)]


def test_every_stream_has_a_view(tmp_path: Path) -> None:
    con = connect(tmp_path)
    views = {name for (name,) in con.execute("select view_name from duckdb_views()").fetchall()}
    assert set(STREAMS) <= views


def test_acks_view_has_typed_columns_and_rules_as_a_list(tmp_path: Path) -> None:
    empty = connect(tmp_path)
    types = dict(empty.execute("select column_name, column_type from (describe acks)").fetchall())
    assert types["rules"] == "VARCHAR[]"
    assert types["ts"] == types["issued"] == "TIMESTAMP WITH TIME ZONE"
    assert types["latency_from_telemetry_ms"] == "BIGINT"
    write(tmp_path, "acks", "1", [ack_row("a", "c1", result="clamped", rules=["soc_min"])])
    rows = connect(tmp_path).execute("select result, rules, ts from acks").fetchall()
    assert rows == [("clamped", ["soc_min"], datetime(2023, 11, 14, 22, 13, 20, 60000, tzinfo=UTC))]


def test_acks_view_removes_redeliveries_but_keeps_each_later_delivery(tmp_path: Path) -> None:
    applied = ack_row("a", "c1")
    duplicate = ack_row("a", "c1", result="duplicate", ts_ms=T0_MS + 900, applied_w=-656.0)
    write(tmp_path, "acks", "1", [applied, ack_row("b", "c1")])
    write(tmp_path, "acks", "2", [applied, duplicate])  # the broker redelivered `applied`
    write(tmp_path, "acks", "3", [duplicate, ack_row("a", "c1", result="duplicate")])
    rows = (
        connect(tmp_path)
        .execute("select asset, result, ts_ms - ? from acks order by asset, 3", [T0_MS])
        .fetchall()
    )
    assert rows == [
        ("a", "applied", 60),
        ("a", "duplicate", 60),
        ("a", "duplicate", 900),
        ("b", "applied", 60),
    ]


def test_query_cli_reads_the_acks_view(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "acks", "1", [ack_row("a", "c1"), ack_row("b", "c2", result="failed")])
    sql = "select result, count(*) as n from acks group by result order by result"
    code, out, _ = run_query(["--data-dir", str(tmp_path), sql], capsys)
    assert (code, out) == (0, "result,n\napplied,1\nfailed,1\n")


def test_refresh_views_picks_up_the_first_files(tmp_path: Path) -> None:
    con = connect(tmp_path)
    write(tmp_path, "telemetry", "1", [telemetry_row("a", 1)])
    assert con.execute("select count(*) from telemetry").fetchall() == [(0,)]
    refresh_views(con, tmp_path)
    assert con.execute("select count(*) from telemetry").fetchall() == [(1,)]


def test_a_view_over_files_sees_new_files_without_refresh(tmp_path: Path) -> None:
    write(tmp_path, "telemetry", "1", [telemetry_row("a", 1)])
    con = connect(tmp_path)
    write(tmp_path, "telemetry", "2", [telemetry_row("a", 2)])
    assert con.execute("select count(*) from telemetry").fetchall() == [(2,)]


def run_query(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["query", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_query_cli_prints_csv_with_a_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "telemetry", "1", [telemetry_row("a", 1, energy_export_wh=10.5)])
    write(tmp_path, "telemetry", "2", [telemetry_row("b", 1, ts_ms=T0_MS + 1)])
    code, out, _ = run_query(
        [
            "--data-dir",
            str(tmp_path),
            "select asset, ts, energy_export_wh from telemetry order by asset",
        ],
        capsys,
    )
    assert code == 0
    assert list(csv.reader(io.StringIO(out))) == [
        ["asset", "ts", "energy_export_wh"],
        ["a", "2023-11-14T22:13:20+00:00", "10.5"],
        ["b", "2023-11-14T22:13:20.001000+00:00", ""],
    ]


def test_query_cli_reads_the_history_dir_of_a_site_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "hist", "telemetry", "1", [telemetry_row("a", 1)])
    site = tmp_path / "site.toml"
    site.write_text('[site]\nid = "s1"\n\n[history]\ndir = "hist"\n')
    code, out, _ = run_query(["--site", str(site), "select count(*) as n from telemetry"], capsys)
    assert (code, out) == (0, "n\n1\n")


def test_query_cli_on_an_empty_dir_prints_only_the_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_query(
        ["--data-dir", str(tmp_path), "select window_start, mean_hz from grid_frequency"], capsys
    )
    assert (code, out) == (0, "window_start,mean_hz\n")


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("selec * from telemetry", "Parser"),
        ("select nope from telemetry", "nope"),
        ("select * from no_such_view", "no_such_view"),
    ],
)
def test_query_cli_reports_bad_sql_on_stderr_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sql: str, message: str
) -> None:
    code, out, err = run_query(["--data-dir", str(tmp_path), sql], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("gridflex query: ") and message in err


def test_files_written_before_the_register_check_read_register_decreased_as_null(
    tmp_path: Path,
) -> None:
    field = TELEMETRY_SCHEMA.get_field_index("register_decreased")
    old_schema = TELEMETRY_SCHEMA.remove(field)
    old_row = {k: v for k, v in telemetry_row("a", 1).items() if k in old_schema.names}
    folder = partition_dir(tmp_path, "telemetry", utc_date(T0_MS))
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([old_row], schema=old_schema), folder / "part-0.parquet")
    write(tmp_path, "telemetry", "1", [telemetry_row("a", 2, register_decreased=True)])
    query = "select seq, register_decreased from telemetry order by seq"
    assert connect(tmp_path).execute(query).fetchall() == [(1, None), (2, True)]


def test_a_redelivered_copy_does_not_hide_the_register_flag_of_its_reading(
    tmp_path: Path,
) -> None:
    # The first run flagged seq 2; a later run saw it again after a restart, unchecked.
    write(tmp_path, "telemetry", "1", [telemetry_row("a", 2, register_decreased=True)])
    write(tmp_path, "telemetry", "2", [telemetry_row("a", 2, register_decreased=False)])
    write(tmp_path, "telemetry", "3", [telemetry_row("a", 3, register_decreased=False)])
    query = "select seq, register_decreased from telemetry order by seq"
    assert connect(tmp_path).execute(query).fetchall() == [(2, True), (3, False)]
