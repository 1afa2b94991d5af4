"""``gridflex billing`` as a user runs it: a real process over a history the real writer wrote."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gridflex.billing import cli as billing_cli
from gridflex.billing.cli import parse_time
from gridflex.config import BillingConfig, ConfigError, parse_site
from gridflex.contract import Telemetry
from pipelines.history_sink import ParquetStreamWriter, telemetry_row

#: 2026-11-25T12:00:00Z, a 15-minute boundary, in epoch ms.
B = 1_795_608_000_000
MIN15 = 900_000
HEADER = (
    "site,asset,session_id,interval_start_ms,interval_end_ms,"
    "energy_import_wh,energy_export_wh,quality\n"
)


def gridflex(*argv: str) -> subprocess.CompletedProcess[str]:
    # WARNING: a run that happens to last over 2 s on a busy machine logs its progress at
    # INFO; the tests check that standard error has no warning, error or traceback.
    return subprocess.run(
        [sys.executable, "-m", "gridflex.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "GRIDFLEX_LOG_LEVEL": "WARNING"},
    )


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """inv-a imports 1 Wh/s from 11:50 to 12:20 (a reading a minute); so 600 Wh from 11:50
    to 12:00, 900 Wh from 12:00 to 12:15 and 300 Wh after 12:15."""
    writer = ParquetStreamWriter(tmp_path, "telemetry", ts_column="ts_ms", name="t")
    start = B - 600_000
    writer.add([
        telemetry_row(Telemetry(
            site="s1", asset="inv-a", kind="inverter", ts_ms=start + i * 60_000, seq=i,
            boot="b1", power_w=3600.0, energy_import_wh=60.0 * i, energy_export_wh=0.0,
        ))
        for i in range(31)
    ])  # fmt: skip
    writer.flush()
    return tmp_path


def test_csv_of_the_intervals_that_start_in_the_period(history: Path) -> None:
    done = gridflex(
        "billing", "--data-dir", str(history),
        "--from", "2026-11-25T12:00:00Z", "--to", "2026-11-25T12:15:00+00:00",
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == HEADER + f"s1,inv-a,,{B},{B + MIN15},900.0,0.0,ok\n"


def test_a_date_as_to_means_the_whole_day(history: Path) -> None:
    done = gridflex(
        "billing", "--data-dir", str(history), "--from", "2026-11-25", "--to", "2026-11-25"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        f"s1,inv-a,,{B - MIN15},{B},600.0,0.0,ok",
        f"s1,inv-a,,{B},{B + MIN15},900.0,0.0,ok",
        f"s1,inv-a,,{B + MIN15},{B + 2 * MIN15},300.0,0.0,ok",
    ]


def test_exported_energy_is_rounded_to_the_milliwatt_hour_not_float_noise(
    tmp_path: Path,
) -> None:
    writer = ParquetStreamWriter(tmp_path, "telemetry", ts_column="ts_ms", name="t")
    registers = (1000.1, 1010.47)  # their difference is 10.370000000000005 in floats
    writer.add([
        telemetry_row(Telemetry(
            site="s1", asset="inv-a", kind="inverter", ts_ms=B + (i + 1) * 60_000, seq=i,
            boot="b1", power_w=600.0, energy_import_wh=wh, energy_export_wh=0.0,
        ))
        for i, wh in enumerate(registers)
    ])  # fmt: skip
    writer.flush()
    assert registers[1] - registers[0] != 10.37
    done = gridflex(
        "billing", "--data-dir", str(tmp_path), "--from", "2026-11-25", "--to", "2026-11-25"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [f"s1,inv-a,,{B},{B + MIN15},10.37,0.0,ok"]


def test_parquet_to_a_file(history: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "nov.parquet"
    out.parent.mkdir()
    done = gridflex(
        "billing", "--data-dir", str(history), "--from", "2026-11-25", "--to", "2026-11-26",
        "--format", "parquet", "--out", str(out),
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, ""), done.stderr
    table = pq.read_table(out)
    assert table.column("energy_import_wh").to_pylist() == [600.0, 900.0, 300.0]
    assert [p.name for p in out.parent.iterdir()] == ["nov.parquet"]  # no temporary left


def test_the_site_file_sets_the_interval(history: Path, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        f'[site]\nid = "s1"\n[history]\ndir = "{history.as_posix()}"\n'
        "[billing]\ninterval_min = 30\nmax_gap_s = 30\n",
        encoding="utf-8",
    )
    done = gridflex("billing", "--site", str(site), "--from", "2026-11-25", "--to", "2026-11-25")
    assert done.returncode == 0, done.stderr
    # 30-minute intervals, and readings a minute apart are gaps with max_gap_s = 30.
    assert done.stdout.splitlines()[1:] == [
        f"s1,inv-a,,{B - 2 * MIN15},{B},600.0,0.0,gap",
        f"s1,inv-a,,{B},{B + 2 * MIN15},1200.0,0.0,gap",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from", "yesterday", "--to", "2026-11-26"], "--from"),
        (["--from", "2026-11-25T12:00:00", "--to", "2026-11-26"], "offset is missing"),
        (["--from", "2026-11-25", "--to", "2026-13-01"], "RFC 3339"),
        (["--from", "2026-11-26", "--to", "2026-11-25T00:00:00Z"], "expected a time after"),
        (["--from", "2026-11-25", "--to", "2026-11-26", "--format", "parquet"], "--out"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    history: Path, argv: list[str], message: str
) -> None:
    done = gridflex("billing", "--data-dir", str(history), *argv)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("gridflex billing: ")
    assert message in done.stderr


def test_a_missing_data_dir_is_an_error(tmp_path: Path) -> None:
    done = gridflex(
        "billing",
        "--data-dir",
        str(tmp_path / "typo"),
        "--from",
        "2026-11-25",
        "--to",
        "2026-11-26",
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert "expected an existing history directory" in done.stderr


@pytest.mark.parametrize(
    ("text", "end_of_day", "ms"),
    [
        ("2026-11-25T12:00:00Z", False, B),
        ("2026-11-25T13:00:00+01:00", False, B),
        ("2026-11-25 12:00:00.250Z", False, B + 250),
        ("2026-11-25", False, B - 12 * 3_600_000),
        ("2026-11-25", True, B + 12 * 3_600_000),
        ("2026-11-25T12:00:00Z", True, B),  # a time is a time, also as --to
    ],
)
def test_parse_time(text: str, end_of_day: bool, ms: int) -> None:
    assert parse_time(text, end_of_day=end_of_day) == ms


def test_billing_section_defaults_and_validation() -> None:
    assert parse_site({"site": {"id": "s1"}}).billing == BillingConfig(
        interval_min=15, max_gap_s=60.0
    )
    for bad, message in (
        ({"interval_min": 7}, "billing.interval_min: expected a divisor of 1440"),
        ({"interval_min": 15.0}, "billing.interval_min: expected a whole number"),
        ({"max_gap_s": 0}, "billing.max_gap_s: expected > 0"),
        ({"period": 1}, "billing.period: unknown key"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_site({"site": {"id": "s1"}, "billing": bad})


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _HalfDone:
    """A connection whose running query is 42 % done."""

    def query_progress(self) -> float:
        return 42.0


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "condition not met within 30 s"
        time.sleep(0.01)


def test_progress_is_drawn_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(billing_cli, "_POLL_S", 0.01)
    terminal = _Terminal()
    with billing_cli._Progress(_HalfDone(), terminal):  # type: ignore[arg-type]
        _wait_for(lambda: "42.0%" in terminal.getvalue())
    drawn = terminal.getvalue()
    assert drawn.startswith("\rgridflex billing: [############------------------]")
    assert drawn.endswith("\n")  # the bar's line is ended when the query is done


def test_progress_is_logged_without_a_terminal_once_the_run_is_long(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(billing_cli, "_POLL_S", 0.01)
    monkeypatch.setattr(billing_cli, "PROGRESS_AFTER_S", 0.0)  # every run counts as long
    pipe = io.StringIO()
    with (
        caplog.at_level(logging.INFO, logger="gridflex.billing.cli"),
        billing_cli._Progress(_HalfDone(), pipe),  # type: ignore[arg-type]
    ):
        _wait_for(lambda: any("42% done" in r.getMessage() for r in caplog.records))
    assert pipe.getvalue() == ""  # the stream itself gets no bar
