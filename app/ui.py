"""What every page shares: the history folder, its connection, the empty-history message.

The folder comes from ``--data-dir`` after ``--`` on the ``streamlit run`` command line
(``gridflex app`` passes it), else ``GRIDFLEX_DATA_DIR``, else ``gridflex-demo``; the sidebar
can change it for the session.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Final

import duckdb
import streamlit as st

from app import data
from app.live import LiveFleet, source_from_site
from gridflex.config import ConfigError

__all__ = [
    "DATA_DIR_ENV",
    "DATA_DIR_KEY",
    "WINDOWS",
    "default_data_dir",
    "history",
    "live_feed",
    "sidebar",
    "site_file",
    "time_window",
]

#: Environment variable naming the history folder (the notebooks read it too).
DATA_DIR_ENV: Final = "GRIDFLEX_DATA_DIR"
#: Session-state key of the sidebar's folder field.
DATA_DIR_KEY: Final = "data_dir"
#: The time windows a page can show, ending at its newest data (None: the whole history).
WINDOWS: Final[dict[str, int | None]] = {
    "last 5 min": 300_000,
    "last 15 min": 900_000,
    "last hour": 3_600_000,
    "last 6 hours": 21_600_000,
    "last day": 86_400_000,
    "everything": None,
}


def _app_args(argv: list[str] | None) -> argparse.Namespace:
    """What ``gridflex app`` passes after ``--``: ``--data-dir`` and ``--site`` (else None)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--site", type=Path, default=None)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args


def default_data_dir(argv: list[str] | None = None) -> Path:
    """``--data-dir`` of ``argv`` (default ``sys.argv``), else the environment, else the demo's."""
    data_dir: Path | None = _app_args(argv).data_dir
    if data_dir is not None:
        return data_dir
    return Path(os.environ.get(DATA_DIR_ENV) or "gridflex-demo")


def site_file(argv: list[str] | None = None) -> Path | None:
    """``--site`` of ``argv`` (default ``sys.argv``): the live feed's site file, or None."""
    site: Path | None = _app_args(argv).site
    return site


@st.cache_resource(show_spinner=False)
def _started_feed(path: str) -> LiveFleet:
    """One connected feed per site file for the whole Streamlit server."""
    feed = LiveFleet(source_from_site(Path(path)))
    feed.start()
    return feed


def live_feed() -> LiveFleet | None:
    """The live feed of ``--site``, or None (no site file, or one that does not load: said)."""
    path = site_file()
    if path is None:
        return None
    try:
        return _started_feed(str(path.resolve()))
    except ConfigError as exc:
        st.warning(f"No live view: {exc}. Showing the history.")
        return None


def sidebar() -> None:
    """The sidebar's history-folder field (kept in the session across pages)."""
    if DATA_DIR_KEY not in st.session_state:
        st.session_state[DATA_DIR_KEY] = str(default_data_dir())
    st.sidebar.text_input("history folder", key=DATA_DIR_KEY)


def data_dir() -> Path:
    """The history folder of this session."""
    return Path(st.session_state.get(DATA_DIR_KEY) or default_data_dir()).expanduser()


def history() -> tuple[Path, duckdb.DuckDBPyConnection] | None:
    """The folder and a connection over it, or None after showing why there is nothing.

    Every page starts with it, so a missing or empty folder is one clear message on every
    page, never a traceback.
    """
    folder = data_dir()
    problem = data.history_problem(folder)
    if problem is not None:
        st.info(problem)
        return None
    return folder, data.open_history(folder)


def time_window(key: str, default: str = "last hour") -> int | None:
    """A time-window choice on the page; its span in ms (None: the whole history)."""
    names = list(WINDOWS)
    choice = st.selectbox("time window", names, index=names.index(default), key=key)
    return WINDOWS[choice or default]
