"""Logging set-up shared by every gridflex command: one structured line per record."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["setup_logging"]

_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str | int | None = None) -> None:
    """Log to stderr in UTC, at ``level`` or ``$GRIDFLEX_LOG_LEVEL`` (default INFO)."""
    import time

    chosen = level or os.environ.get("GRIDFLEX_LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen if isinstance(chosen, int) else str(chosen).upper())
    for noisy in ("pymodbus", "websockets", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
