"""``gridflex query``: SQL over the history views, CSV out."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb

from gridflex.history.views import connect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``gridflex query``."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", type=Path, help="history directory")
    where.add_argument("--site", type=Path, help="site file; its history.dir is used")
    parser.add_argument(
        "sql",
        help="one SQL query over the views telemetry, grid_frequency, forecasts, commands, "
        "acks, status_changes, transactions and the billing views",
    )


def _csv_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def write_csv(description: Iterable[Any], rows: Iterable[Iterable[Any]], out: Any = None) -> None:
    """Write a header and rows as CSV to ``out`` (default: standard output)."""
    writer = csv.writer(out if out is not None else sys.stdout, lineterminator="\n")
    writer.writerow([column[0] for column in description])
    for row in rows:
        writer.writerow([_csv_value(v) for v in row])


def _data_dir_of(args: argparse.Namespace) -> Path:
    if args.data_dir is not None:
        data_dir = Path(args.data_dir)
        if not data_dir.is_dir():
            raise ValueError(f"--data-dir {data_dir}: expected an existing history directory")
        return data_dir
    from gridflex.config import load_site  # only needed for --site

    return Path(load_site(args.site).history.dir)


def main(args: argparse.Namespace) -> int:
    """Run one query and print the result as CSV with a header.

    Returns 2 on a bad query, a bad site file or a ``--data-dir`` that is not a directory
    (a typo must not look like an empty history). A ``--site`` whose history folder does not
    exist yet queries empty views: nothing has been recorded.
    """
    try:
        data_dir = _data_dir_of(args)
    except Exception as exc:  # a config error is reported, not raised
        sys.stderr.write(f"gridflex query: {exc}\n")
        return 2
    con = connect(data_dir)
    try:
        result = con.execute(args.sql)
        description = result.description
        if description is None:
            return 0

        def batches() -> Iterable[tuple[Any, ...]]:
            while chunk := result.fetchmany(10_000):
                yield from chunk

        write_csv(description, batches())
    except duckdb.Error as exc:
        sys.stderr.write(f"gridflex query: {type(exc).__name__}: {exc}\n")
        return 2
    finally:
        con.close()
    sys.stdout.flush()
    return 0
