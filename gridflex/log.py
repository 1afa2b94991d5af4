"""Logging set-up shared by every gridflex command: one structured line per record.

Two formats (``--log-format``, ``$GRIDFLEX_LOG_FORMAT``):

- ``text`` (default): ``2026-11-30T21:00:00.123Z INFO component: message``;
- ``json``: one object per line, for journald and log shippers: ``time`` (RFC 3339, UTC),
  ``level``, ``component`` (the logger's name), ``message``, and ``asset``, ``event``,
  ``fault_code`` when the record carries them (``log.error(..., extra={"asset": a,
  "event": "fault", "fault_code": "Grid_Sync_Error"})``); ``exception`` holds the
  traceback when there is one.

Only these fields are written, never the record's other attributes; passwords in URLs
(``mqtt://user:secret@host``) and bearer tokens are masked in both formats.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
import time
from typing import Final

__all__ = ["FORMATS", "JsonFormatter", "TextFormatter", "redact", "setup_logging"]

#: The log formats ``--log-format`` accepts.
FORMATS: Final = ("text", "json")

#: Fields a record may carry through ``extra=`` that the JSON format writes.
EXTRA_FIELDS: Final = ("asset", "event", "fault_code")

_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"

_SECRETS: Final = (
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*):[^@\s]*@", re.IGNORECASE), r"\1:***@"),
    (re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1***"),
)


def redact(text: str) -> str:
    """``text`` with URL passwords and bearer tokens replaced by ``***``."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class TextFormatter(logging.Formatter):
    """The text line, in UTC, with secrets masked."""

    def __init__(self) -> None:
        super().__init__(_FORMAT, datefmt="%Y-%m-%dT%H:%M:%S")
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        """Format as the parent does, then mask secrets."""
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        when = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        entry: dict[str, object] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "component": record.name,
            "message": redact(record.getMessage()),
        }
        for name in EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


def setup_logging(level: str | int | None = None, fmt: str | None = None) -> None:
    """Log to stderr in UTC, at ``level`` or ``$GRIDFLEX_LOG_LEVEL`` (default INFO).

    ``fmt`` is ``text`` or ``json`` (default ``$GRIDFLEX_LOG_FORMAT``, else ``text``); a
    format given here is exported to ``$GRIDFLEX_LOG_FORMAT`` so that the processes this
    one spawns (the pipeline's receivers, the demo's parts) log the same way.

    Raises:
        ValueError: ``fmt`` is not one of :data:`FORMATS`.

    """
    chosen = level or os.environ.get("GRIDFLEX_LOG_LEVEL", "INFO")
    form = (fmt or os.environ.get("GRIDFLEX_LOG_FORMAT") or "text").lower()
    if form not in FORMATS:
        raise ValueError(f"log format {form!r}: expected one of {', '.join(FORMATS)}")
    if fmt is not None:
        os.environ["GRIDFLEX_LOG_FORMAT"] = form
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if form == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen if isinstance(chosen, int) else str(chosen).upper())
    for noisy in ("pymodbus", "websockets", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
