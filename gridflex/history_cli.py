"""``gridflex history compact`` and ``gridflex history prune`` (:mod:`gridflex.history_store`).

Both subcommands live here; :func:`add_arguments` tells them apart by the parser's name.
Exit status 0 done, 1 a partition could not be compacted (left as it was, logged), 2 a
usage or configuration error, 3 another upkeep run holds the lock.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

from gridflex.config import HISTORY_STREAMS, ConfigError, load_site

__all__ = ["add_arguments", "main", "parse_retention"]

log = logging.getLogger(__name__)

EXIT_BUSY = 3


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``gridflex history compact`` or ``gridflex history prune``."""
    parser.add_argument("--data-dir", type=Path, help="history directory")
    parser.add_argument("--site", type=Path, help="site file: its history.dir (and retention)")
    if parser.prog.split()[-1] == "compact":
        parser.set_defaults(_history="compact")
        parser.add_argument(
            "--stream",
            action="append",
            choices=HISTORY_STREAMS,
            help="compact this stream only (repeatable; default: all)",
        )
        parser.add_argument(
            "--before",
            type=_date,
            help="compact the days before this one (YYYY-MM-DD; default and at most today, UTC)",
        )
        parser.add_argument(
            "--grace-s",
            type=float,
            default=2.0,
            help="seconds between the merged files appearing and the originals going (2)",
        )
    else:
        parser.set_defaults(_history="prune")
        parser.add_argument(
            "--retention-days",
            action="append",
            metavar="N|STREAM=N",
            help="days kept: N for every stream or STREAM=N (repeatable); "
            "default: [history] retention_days of --site",
        )
        parser.add_argument("--today", type=_date, help=argparse.SUPPRESS)


def parse_retention(values: list[str]) -> dict[str, int]:
    """``["30", "telemetry=400"]`` -> days per stream (a later value wins)."""
    out: dict[str, int] = {}
    for value in values:
        stream, sep, days_text = value.rpartition("=")
        try:
            days = int(days_text)
        except ValueError:
            raise ValueError(f"--retention-days {value!r}: expected N or STREAM=N") from None
        if days < 1:
            raise ValueError(f"--retention-days {value!r}: expected at least 1 day")
        if not sep:
            out.update(dict.fromkeys(HISTORY_STREAMS, days))
        elif stream in HISTORY_STREAMS:
            out[stream] = days
        else:
            raise ValueError(f"--retention-days {value!r}: unknown stream {stream!r}")
    return out


def main(args: argparse.Namespace) -> int:
    """Run the chosen upkeep; print one line per partition merged or removed."""
    from gridflex.history_store import UpkeepBusy, compact, prune

    try:
        site = load_site(args.site) if args.site is not None else None
        if args.data_dir is not None:
            data_dir = Path(args.data_dir)
        elif site is not None:
            data_dir = Path(site.history.dir)
        else:
            raise ValueError("expected --data-dir DIR or --site FILE")
        if not data_dir.is_dir():
            raise ValueError(f"--data-dir {data_dir}: expected an existing history directory")
        if args._history == "prune":
            if args.retention_days:
                retention = parse_retention(args.retention_days)
            elif site is not None and site.history.retention_days:
                retention = dict(site.history.retention_days)
            else:
                raise ValueError("no retention: give --retention-days or a --site that sets it")
    except (ValueError, ConfigError) as exc:
        sys.stderr.write(f"gridflex history: {exc}\n")
        return 2
    try:
        if args._history == "compact":
            report = compact(
                data_dir, streams=args.stream, before=args.before, grace_s=args.grace_s
            )
            for path in report.merged:
                sys.stdout.write(f"merged {path}\n")
            log.info(
                "compaction: %d partitions, %d files, %d rows -> %d rows",
                report.partitions,
                report.files_in,
                report.rows_in,
                report.rows_out,
            )
            for path in report.failed:
                sys.stderr.write(f"gridflex history: not compacted (see the log): {path}\n")
            if report.failed:
                return 1
        else:
            for path in prune(data_dir, retention, today=args.today):
                sys.stdout.write(f"removed {path}\n")
    except UpkeepBusy as exc:
        sys.stderr.write(f"gridflex history: {exc}\n")
        return EXIT_BUSY
    return 0
