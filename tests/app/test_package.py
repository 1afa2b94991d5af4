"""The app ships in the wheel, and ``gridflex app`` finds it through the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import app

ROOT = Path(__file__).resolve().parents[2]


def _build_wheel(out: Path) -> Path:
    uv = subprocess.run(
        ["sh", "scripts/ensure-uv.sh"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=240,
    )
    (wheel,) = out.glob("gridflex-*.whl")
    return wheel


def test_the_wheel_holds_the_app_and_gridflex_app_runs_the_installed_copy(
    tmp_path: Path,
) -> None:
    wheel = _build_wheel(tmp_path / "dist")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"app/__init__.py", "app/streamlit_app.py", "app/data.py", "app/ui.py"}
    expected |= {f"app/{script}" for script, _, _ in app.PAGES}
    assert expected <= names, sorted(expected - names)

    # Installed (unpacked) away from the checkout: the command line names the installed
    # script, which exists there.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import argparse, pathlib; from gridflex import app_cmd; "
        "argv = app_cmd.streamlit_argv(argparse.Namespace("
        "data_dir=pathlib.Path('d'), site=None, host='127.0.0.1', port=1)); "
        "print(argv[argv.index('run') + 1])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    script = Path(out)
    assert script == site / "app" / "streamlit_app.py"
    assert script.is_file()
