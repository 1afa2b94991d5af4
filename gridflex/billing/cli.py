r"""``gridflex billing``: export the settlements of a period as CSV or Parquet.

::

    gridflex billing --data-dir data --from 2026-11-01 --to 2026-11-30 > nov.csv
    gridflex billing --site site.toml --from 2026-11-30T00:00:00Z \
        --to 2026-11-30T12:00:00Z --format parquet --out half-day.parquet

The rows are those of the ``settlements`` view whose interval starts in ``[from, to)``,
ordered by interval, site, asset and session. ``T`` is an RFC 3339 time with its offset
(``2026-11-30T12:00:00Z``, ``...+01:00``) or a date (``2026-11-30``: UTC midnight; as
``--to``, the end of that day, so ``--from D --to D`` is the whole day D). A bad ``T`` is one
line on standard error and exit status 2.

While the query runs, the share DuckDB reports done is drawn on standard error when that
is a terminal, or once a run has lasted ``PROGRESS_AFTER_S`` (a log line every few
seconds then); standard output carries the CSV only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final, TextIO

import duckdb

from gridflex.history import connect, write_csv

__all__ = ["PROGRESS_AFTER_S", "add_arguments", "main", "parse_time"]

log = logging.getLogger(__name__)

#: A run that lasts longer than this reports its progress even without a terminal.
PROGRESS_AFTER_S: Final = 2.0
_POLL_S: Final = 0.2
_LOG_EVERY_S: Final = 5.0

#: Decimal places of the exported energies: 1 mWh, finer than any meter register, so the
#: float noise of register differences (``10.369999999995343``) does not reach the bill.
EXPORT_DECIMALS: Final = 3

_QUERY: Final = f"""
SELECT site, asset, session_id, interval_start_ms, interval_end_ms,
       round(energy_import_wh, {EXPORT_DECIMALS}) AS energy_import_wh,
       round(energy_export_wh, {EXPORT_DECIMALS}) AS energy_export_wh, quality
FROM settlements
WHERE interval_start_ms >= $from_ms AND interval_start_ms < $to_ms
ORDER BY interval_start_ms, site, asset, session_id NULLS FIRST
"""


def parse_time(text: str, *, end_of_day: bool = False) -> int:
    """Parse an RFC 3339 time or a date into UTC epoch milliseconds.

    Args:
        text: ``YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`` or ``YYYY-MM-DD``.
        end_of_day: A date means the midnight that ends it (for ``--to``), not the one
            that starts it.

    Raises:
        ValueError: Neither form, or a time without its offset (ambiguous for a bill).

    """
    expected = "expected an RFC 3339 time with offset (2026-11-30T12:00:00Z) or a date"
    stripped = text.strip()
    if len(stripped) == 10:
        try:
            day = dt.date.fromisoformat(stripped)
        except ValueError:
            raise ValueError(f"{expected}, got {text!r}") from None
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        if end_of_day:
            start += dt.timedelta(days=1)
        return int(start.timestamp() * 1000)
    if "t" not in stripped.lower() and " " not in stripped:
        raise ValueError(f"{expected}, got {text!r}")
    try:
        moment = dt.datetime.fromisoformat(stripped.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"{expected}, got {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"{expected}: the offset is missing in {text!r}")
    return round(moment.timestamp() * 1000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``gridflex billing``."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", type=Path, help="history directory")
    where.add_argument(
        "--site", type=Path, help="site file; its history.dir and [billing] are used"
    )
    parser.add_argument(
        "--from", dest="from_", required=True, metavar="T", help="RFC 3339 time or date"
    )
    parser.add_argument(
        "--to", required=True, metavar="T", help="RFC 3339 time, or a date (to its end)"
    )
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.add_argument(
        "--out", type=Path, default=None, help="output file (default: standard output, CSV)"
    )


class _Progress:
    """Draws DuckDB's progress of the running query on standard error, from a thread."""

    def __init__(self, con: duckdb.DuckDBPyConnection, stream: TextIO) -> None:
        self._con = con
        self._stream = stream
        self._tty = stream.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="billing-progress", daemon=True)
        self._drawn = False

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._drawn and self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def _run(self) -> None:
        started = time.monotonic()
        last_log = started
        while not self._stop.wait(_POLL_S):
            elapsed = time.monotonic() - started
            if not self._tty and elapsed < PROGRESS_AFTER_S:
                continue
            try:
                done = max(0.0, self._con.query_progress())
            except duckdb.Error:
                return
            if self._tty:
                filled = int(done / 100 * 30)
                bar = "#" * filled + "-" * (30 - filled)
                self._stream.write(f"\rgridflex billing: [{bar}] {done:5.1f}% {elapsed:6.1f} s")
                self._stream.flush()
                self._drawn = True
            elif time.monotonic() - last_log >= _LOG_EVERY_S or not self._drawn:
                log.info("billing export: %.0f%% done after %.0f s", done, elapsed)
                last_log = time.monotonic()
                self._drawn = True


def _settings(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The history folder and the ``[billing]`` settings (defaults with ``--data-dir``)."""
    from gridflex.config import BillingConfig, load_site

    if args.data_dir is not None:
        data_dir = Path(args.data_dir)
        if not data_dir.is_dir():
            raise ValueError(f"--data-dir {data_dir}: expected an existing history directory")
        billing = BillingConfig()
    else:
        site = load_site(args.site)
        data_dir, billing = Path(site.history.dir), site.billing
    return data_dir, {"interval_min": billing.interval_min, "max_gap_s": billing.max_gap_s}


def _export(con: duckdb.DuckDBPyConnection, args: argparse.Namespace, span: dict[str, int]) -> int:
    """Run the query and write its rows; return how many."""
    if args.format == "parquet":
        out = Path(args.out)
        tmp = out.with_name(f".{out.name}.tmp")
        query = _QUERY.replace("$from_ms", str(span["from_ms"])).replace(
            "$to_ms", str(span["to_ms"])
        )
        path = tmp.as_posix().replace("'", "''")
        with _Progress(con, sys.stderr):
            con.execute(f"COPY ({query}) TO '{path}' (FORMAT parquet, COMPRESSION zstd)")
        tmp.replace(out)
        row = con.execute(f"SELECT count(*) FROM read_parquet('{out.as_posix()}')").fetchone()
        return int(row[0]) if row else 0
    with _Progress(con, sys.stderr):
        result = con.execute(_QUERY, span)
        first = result.fetchmany(10_000)
    count = 0

    def rows() -> Any:
        nonlocal count
        chunk = first
        while chunk:
            count += len(chunk)
            yield from chunk
            chunk = result.fetchmany(10_000)

    if args.out is None:
        write_csv(result.description, rows())
        sys.stdout.flush()
    else:
        out = Path(args.out)
        tmp = out.with_name(f".{out.name}.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            write_csv(result.description, rows(), fh)
        tmp.replace(out)
    return count


def _option_time(option: str, text: str, *, end_of_day: bool) -> int:
    try:
        return parse_time(text, end_of_day=end_of_day)
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None


def main(args: argparse.Namespace) -> int:
    """Export the settlements of ``[--from, --to)``; 2 on a usage or configuration error."""
    try:
        span = {
            "from_ms": _option_time("--from", args.from_, end_of_day=False),
            "to_ms": _option_time("--to", args.to, end_of_day=True),
        }
        if span["to_ms"] <= span["from_ms"]:
            raise ValueError(f"--to {args.to}: expected a time after --from {args.from_}")
        if args.format == "parquet" and args.out is None:
            raise ValueError("--format parquet: expected --out FILE")
        data_dir, billing = _settings(args)
    except Exception as exc:  # a usage or config error is one line, not a traceback
        sys.stderr.write(f"gridflex billing: {exc}\n")
        return 2
    con = connect(data_dir, **billing)
    started = time.monotonic()
    try:
        count = _export(con, args, span)
    except duckdb.Error as exc:
        sys.stderr.write(f"gridflex billing: {type(exc).__name__}: {exc}\n")
        return 2
    finally:
        con.close()
    elapsed = time.monotonic() - started
    log.log(
        logging.INFO if elapsed >= PROGRESS_AFTER_S else logging.DEBUG,
        "billing export: %d settlement rows in %.1f s%s",
        count,
        elapsed,
        f" to {args.out}" if args.out else "",
    )
    return 0
