"""``gridflex app``: the Streamlit analytics app over the history.

The app is the ``app`` package, shipped in the wheel beside ``gridflex``; its main script is
found through the package (:data:`app.MAIN_SCRIPT`), so an installed gridflex runs it too.

Under systemd (``$NOTIFY_SOCKET`` set) the command stays the unit's main process and runs
Streamlit as its child: it sends ``READY=1`` once the app answers its health check, pings
the watchdog while it keeps answering, and passes SIGTERM/SIGINT on. Otherwise it replaces
itself with Streamlit.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType

from app import MAIN_SCRIPT
from gridflex import systemd
from gridflex.config import load_site

__all__ = ["add_arguments", "app_healthy", "main", "streamlit_argv"]

log = logging.getLogger(__name__)

#: How often the supervisor checks the app while waiting for it to come up.
_POLL_S = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gridflex app``."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("gridflex-demo"),
        help="history folder (default: %(default)s); a missing one shows a message",
    )
    parser.add_argument(
        "--site",
        type=Path,
        default=None,
        help="site file: the Fleet page then shows the assets live from its broker "
        "([mqtt]; read-only credentials are enough), else the newest history",
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
        *(["--site", str(args.site.resolve())] if args.site is not None else []),
    ]  # fmt: skip


def app_healthy(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether Streamlit answers ``/_stcore/health`` with 200 on ``host:port``."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    try:
        with urllib.request.urlopen(
            f"http://{host}:{port}/_stcore/health", timeout=timeout_s
        ) as response:
            return int(response.status) == 200
    except OSError:
        return False


def _supervise(args: argparse.Namespace) -> int:
    """Run Streamlit as a child and speak systemd's notify protocol for it."""
    child = subprocess.Popen(streamlit_argv(args))

    def _forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _forward)
    dog = systemd.Watchdog()
    ready = False
    next_ping = 0.0
    while child.poll() is None:
        healthy = app_healthy(args.host, args.port)
        if healthy and not ready:
            ready = True
            systemd.ready(f"app on http://{args.host}:{args.port}/")
            log.info("app: serving on http://%s:%d/", args.host, args.port)
        if ready and healthy:
            dog.beat()
        if ready and dog.interval_s is not None and time.monotonic() >= next_ping:
            dog.tick()
            next_ping = time.monotonic() + dog.interval_s
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(_POLL_S)
    systemd.stopping()
    code = child.returncode
    # streamlit exits 0 on SIGTERM; a signal death is reported as a failure
    return code if code >= 0 else 128 - code


def main(args: argparse.Namespace) -> int:
    """Run ``streamlit run`` on the app's main script (see the module docstring)."""
    if args.site is not None:
        load_site(args.site)  # a bad site file: ConfigError (file, key, expectation) first
    if os.environ.get("NOTIFY_SOCKET"):
        return _supervise(args)
    os.execv(sys.executable, streamlit_argv(args))
    return 0  # not reached
