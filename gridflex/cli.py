"""The ``gridflex`` command: one entry point, one subcommand per part.

Each subcommand lives in the module of its part, which exposes
``add_arguments(parser)`` and ``main(args) -> int``; modules are imported only when their
subcommand runs, so ``gridflex query`` does not pay for Bytewax or OCPP.

Exit codes: 0 done, 2 a usage or configuration error (one line on standard error), 141
(128 + SIGPIPE) when the reader of standard output went away, as in ``gridflex query ... |
head``: the command stops quietly, without a traceback, like a shell tool would.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from gridflex import __version__
from gridflex.config import ConfigError
from gridflex.log import FORMATS, setup_logging

__all__ = ["COMMANDS", "EXIT_BROKEN_PIPE", "build_parser", "main"]

log = logging.getLogger(__name__)

#: (command words, module, one-line help)
COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("check",), "gridflex.check", "validate a site file and summarise it"),
    (
        ("broker-config",),
        "gridflex.broker_config",
        "write a Mosquitto config: TLS, one user per role, an ACL",
    ),
    (
        ("central",),
        "gridflex.central",
        "share a fleet-level FCR capacity across sites by their summaries",
    ),
    (("demo",), "gridflex.demo", "run broker, simulators, collectors and the dataflow together"),
    (("sim", "inverters"), "simulators.inverter", "simulated SunSpec inverters over Modbus TCP"),
    (("sim", "chargers"), "simulators.charger", "simulated OCPP charging stations with EVs"),
    (("collect", "modbus"), "collectors.modbus", "poll SunSpec devices into MQTT"),
    (("collect", "ocpp"), "collectors.ocpp", "OCPP 2.0.1/2.1 CSMS publishing to MQTT"),
    (("pipeline",), "pipelines.cli", "the Bytewax dataflow: validation, frequency, history"),
    (
        ("control",),
        "control.cli",
        "apply dispatch commands to the devices (SunSpec 704), with ledger and clamp",
    ),
    (("query",), "gridflex.history", "run SQL over the Parquet history with DuckDB, print CSV"),
    (
        ("history", "compact"),
        "gridflex.history_cli",
        "merge the small Parquet files of each closed day, atomically",
    ),
    (("history", "prune"), "gridflex.history_cli", "remove the days older than retention"),
    (
        ("billing",),
        "gridflex.billing.cli",
        "export settlements per asset, session and interval as CSV or Parquet",
    ),
    (("app",), "gridflex.app_cmd", "the Streamlit analytics app over the history"),
    (("contract", "export"), "gridflex.contract_docs", "write JSON Schemas and AsyncAPI to docs/"),
]


#: Exit code when standard output is a closed pipe (128 + SIGPIPE, what a shell tool reports).
EXIT_BROKEN_PIPE = 141

#: Top-level options that take a value (their value is not a command word).
_VALUED_OPTIONS = frozenset({"--log-level", "--log-format"})


def _chosen(argv: Sequence[str]) -> tuple[str, ...]:
    words: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in _VALUED_OPTIONS:
            skip = True
        elif not token.startswith("-"):
            words.append(token)
    for command, _module, _help in COMMANDS:
        if tuple(words[: len(command)]) == command:
            return command
    return ()


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Build the argument parser; only the chosen subcommand's module is imported."""
    chosen = _chosen(argv)
    parser = argparse.ArgumentParser(
        prog="gridflex", description="EVs and inverters as a flexible grid asset."
    )
    parser.add_argument("--version", action="version", version=f"gridflex {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING or ERROR")
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default=None,
        help="text (default) or json: one object per line (default: $GRIDFLEX_LOG_FORMAT)",
    )
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    group_parsers: dict[str, argparse.ArgumentParser] = {}
    for words, module_name, help_text in COMMANDS:
        if len(words) == 1:
            sub = top.add_parser(words[0], help=help_text, description=help_text)
        else:
            head, leaf = words
            if head not in groups:
                group_parsers[head] = top.add_parser(head, help=f"{head} subcommands")
                groups[head] = group_parsers[head].add_subparsers(
                    dest=f"{head}_command", metavar="SUBCOMMAND", required=True
                )
            sub = groups[head].add_parser(leaf, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        if words != chosen:
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            sub.set_defaults(_unavailable=str(exc))
            continue
        module.add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``gridflex`` command line; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        setup_logging(args.log_level, args.log_format)
    except ValueError as exc:  # a bad $GRIDFLEX_LOG_FORMAT
        sys.stderr.write(f"gridflex: GRIDFLEX_LOG_FORMAT: {exc}\n")
        return 2
    if getattr(args, "_unavailable", None):
        log.error("%s is not available: %s", args._module, args._unavailable)
        return 2
    module = importlib.import_module(args._module)
    try:
        code = int(module.main(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        sys.stderr.write(f"gridflex: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 0
    return code


def _drop_stdout() -> None:
    """Point standard output at /dev/null so the interpreter's last flush cannot fail again.

    The usual remedy for ``BrokenPipeError`` (see the Python ``signal`` documentation, "Note
    on SIGPIPE"); a stdout without a file descriptor (tests capturing it) is left alone.
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
