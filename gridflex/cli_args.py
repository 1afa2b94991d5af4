"""Argument types for the ``gridflex`` subcommands: numbers checked before anything starts.

``argparse`` calls these on the text of an option; a bad value ends the command with the
usual usage line and exit code 2, before a broker, a simulator or a dataflow is started::

    gridflex demo: error: argument --inverters: expected a whole number 0..10000, got '-1'
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

__all__ = ["count", "existing_file", "positive_seconds"]


def count(maximum: int) -> Callable[[str], int]:
    """A whole number ``0..maximum`` (how many simulated devices, for example)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if not 0 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"expected a whole number 0..{maximum}, got {text!r}")
        return value

    return parse


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def existing_file(text: str) -> Path:
    """A path to a file that exists and can be opened."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return path
