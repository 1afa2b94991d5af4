"""``gridflex app``: the Streamlit analytics app over the history."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["APP_FILE", "add_arguments", "main"]

APP_FILE = Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gridflex app``."""
    parser.add_argument("--data-dir", type=Path, default=Path("gridflex-demo"))
    parser.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8501)


def main(args: argparse.Namespace) -> int:
    """Replace this process with ``streamlit run`` on the app file."""
    argv = [
        sys.executable, "-m", "streamlit", "run", str(APP_FILE),
        "--server.headless", "true",
        "--server.address", args.host,
        "--server.port", str(args.port),
        "--browser.gatherUsageStats", "false",
        "--", "--data-dir", str(args.data_dir.resolve()),
    ]  # fmt: skip
    os.execv(sys.executable, argv)
    return 0  # not reached
