"""The ``gridflex`` entry point: bad arguments refused first, quiet exit into a closed pipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gridflex import demo
from gridflex.cli import EXIT_BROKEN_PIPE, build_parser, main


@pytest.mark.parametrize(
    "argv",
    [
        ["collect", "modbus", "--site", "s.toml", "--modbus-client=pymodbus"],
        ["collect", "modbus", "--site", "s.toml", "--mqtt-client=thread"],
        ["collect", "ocpp", "--site", "s.toml", "--mqtt-client=thread"],
        ["pipeline", "--site", "s.toml", "--mqtt-client=thread"],
        ["control", "--site", "s.toml", "--modbus-client=pymodbus"],
    ],
    ids=["modbus-pymodbus", "modbus-paho", "ocpp-paho", "pipeline-paho", "control-pymodbus"],
)
def test_production_commands_have_no_library_client_option(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """One client per hop: the library clients are the benchmarks' baselines
    (``bench/baselines.py``), not an option of a command."""
    with pytest.raises(SystemExit) as exc:
        build_parser(argv).parse_args(argv)
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def _into_closed_pipe(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``gridflex ARGV | head -1``: read one line, close the pipe, collect the rest."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridflex.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    returncode = proc.wait(timeout=120)
    return subprocess.CompletedProcess(proc.args, returncode, first, err)


def test_query_into_a_closed_pipe_exits_quietly_without_a_traceback(tmp_path: Path) -> None:
    done = _into_closed_pipe(["query", "--data-dir", str(tmp_path), "select * from range(2000000)"])
    assert done.stdout == "range\n"
    assert done.stderr == ""
    assert done.returncode == EXIT_BROKEN_PIPE


def test_check_into_a_closed_pipe_exits_quietly_without_a_traceback(tmp_path: Path) -> None:
    # ~90 bytes per asset line: 3,000 assets are far more than a pipe buffer holds, so the
    # writer is still writing when the reader goes.
    assets = "".join(
        f'[[assets]]\nid = "inv{i}"\nkind = "inverter"\nhost = "127.0.0.1"\n'
        f"port = {1502 + i}\nmax_charge_w = 10000\n"
        for i in range(3000)
    )
    site = tmp_path / "site.toml"
    site.write_text(f'[site]\nid = "s1"\n{assets}', encoding="utf-8")
    done = _into_closed_pipe(["check", "--site", str(site)])
    assert done.stdout.startswith("site s1: 3000 inverter(s)")
    assert done.stderr == ""
    assert done.returncode == EXIT_BROKEN_PIPE


def test_query_on_a_missing_data_dir_is_an_error_not_an_empty_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo"
    assert main(["query", "--data-dir", str(missing), "select 1 as one"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"gridflex query: --data-dir {missing}: expected an existing history directory\n"
    assert not missing.exists()


def test_query_on_a_file_given_as_data_dir_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_dir = tmp_path / "site.toml"
    not_a_dir.write_text("", encoding="utf-8")
    assert main(["query", "--data-dir", str(not_a_dir), "select 1 as one"]) == 2
    assert "expected an existing history directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--inverters", "-1"], "argument --inverters: expected a whole number 0..5000, got '-1'"),
        (["--chargers", "2.5"], "argument --chargers: expected a whole number 0..5000, got '2.5'"),
        (["--inverters", "100000"], "argument --inverters: expected a whole number 0..5000"),
        (["--duration", "-5"], "argument --duration: expected a number of seconds > 0, got '-5'"),
        (["--duration", "0"], "argument --duration: expected a number of seconds > 0"),
        (["--duration", "inf"], "argument --duration: expected a number of seconds > 0"),
        (["--fcr-capacity-w", "-1"], "argument --fcr-capacity-w: expected a number of watts"),
        (["--frequency-profile", "absent.csv"], "argument --frequency-profile: no such file"),
    ],
)
def test_demo_refuses_bad_numbers_before_anything_starts(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[object] = []
    monkeypatch.setattr(demo, "main", started.append)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert started == []


def test_demo_accepts_zero_devices_and_a_fractional_duration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[object] = []
    monkeypatch.setattr(demo, "main", lambda args: seen.append(args) or 0)
    assert main(["demo", "--inverters", "0", "--chargers", "3", "--duration", "0.5"]) == 0
    (args,) = seen
    assert (args.inverters, args.chargers, args.duration) == (0, 3, 0.5)  # type: ignore[attr-defined]
