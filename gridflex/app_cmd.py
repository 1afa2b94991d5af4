"""``gridflex app``: the Streamlit analytics app over the history.

The app is the ``app`` package, shipped in the wheel beside ``gridflex``; its main script is
found through the package (:data:`app.MAIN_SCRIPT`), so an installed gridflex runs it too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from app import MAIN_SCRIPT

__all__ = ["add_arguments", "main", "streamlit_argv"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gridflex app``."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("gridflex-demo"),
        help="history folder (default: %(default)s); a missing one shows a message",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8501, help="HTTP port (8501)")


def streamlit_argv(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command line for ``args`` (headless, no usage statistics)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(MAIN_SCRIPT),
        "--server.headless", "true",
        "--server.address", args.host,
        "--server.port", str(args.port),
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",  # no "Deploy" button
        "--", "--data-dir", str(args.data_dir.resolve()),
    ]  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """Replace this process with ``streamlit run`` on the app's main script."""
    os.execv(sys.executable, streamlit_argv(args))
    return 0  # not reached
