"""The writer's durable SQLite files (ledger, latched faults, charge profiles), opened alike.

WAL mode with ``synchronous=FULL`` (a committed row survives power loss: the ledger's
reasoning in ``control.ledger`` holds for all three), autocommit (``isolation_level=None``:
each writer opens its own transactions), shared between threads behind the caller's lock.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["open_durable"]


def open_durable(path: str | Path, schema: str) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode, ``synchronous=FULL``, with ``schema`` applied."""
    conn = sqlite3.connect(Path(path), check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.executescript(schema)
    return conn
