"""Collector shards: several collector processes share one site, each owning a stable part.

``gridflex collect modbus --shard 2/3`` polls the inverters whose :func:`shard_of` is 2
(of 3); ``gridflex collect ocpp --shard 1/2`` serves the stations whose id hashes to 1 (an
EVSE goes with its station, so a station's EVSEs stay together in one process). The hash
is CRC-32 of the id's UTF-8 bytes, modulo the shard count: stable across processes,
machines and Python versions (Python's own ``hash`` of a string is salted per process).
Adding or removing a shard moves assets between processes; the ids do not change, so the
history and the dispatch follow them.

Each shard is its own MQTT client (``…-modbus-2of3`` appended to the client id) and has
its own retained presence with its own last will, on
``gridflex/v1/{site}/collector/{component}/status`` where the component is
``modbus-2of3``; its ``assets`` list says which assets it owns. One process
(``--shard 1/1``, the default) keeps the plain component ``modbus`` / ``ocpp``.
"""

from __future__ import annotations

import argparse
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["ONE", "Shard", "add_shard_argument", "parse_shard", "shard_of"]

_T = TypeVar("_T")

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")

#: Most shards a site can be split into (a bound for typos, not a design limit).
MAX_SHARDS = 256


def shard_of(key: str, count: int) -> int:
    """The shard (1-based) that owns ``key`` among ``count`` shards: CRC-32 mod ``count``."""
    return zlib.crc32(key.encode("utf-8")) % count + 1


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (both 1-based: ``1/2`` and ``2/2``)."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS or not 1 <= self.index <= self.count:
            raise ValueError(f"expected a shard i/n with 1 <= i <= n <= {MAX_SHARDS}")

    @property
    def sharded(self) -> bool:
        """Whether the site is split (more than one shard)."""
        return self.count > 1

    def owns(self, key: str) -> bool:
        """Whether this shard owns the asset (or station) ``key``."""
        return shard_of(key, self.count) == self.index

    def select(self, items: Iterable[_T], key: str) -> list[_T]:
        """The ``items`` this shard owns, by their attribute ``key`` (``id``, ``station``)."""
        return [item for item in items if self.owns(str(getattr(item, key)))]

    def component(self, base: str) -> str:
        """The collector component of this shard: ``base``, or ``{base}-{i}of{n}``."""
        return f"{base}-{self.index}of{self.count}" if self.sharded else base

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


ONE = Shard()


def parse_shard(text: str) -> Shard:
    """``argparse`` type of ``--shard``: ``i/n`` with ``1 <= i <= n``."""
    match = _SHARD.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected i/n (for example 1/2), got {text!r}")
    try:
        return Shard(int(match.group(1)), int(match.group(2)))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None


def add_shard_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--shard i/n`` to a collector command; ``what`` names what is split."""
    parser.add_argument(
        "--shard",
        type=parse_shard,
        default=ONE,
        metavar="I/N",
        help=f"run shard I of N: own the {what} whose CRC-32 of the id mod N is I-1 "
        "(default 1/1: all of them)",
    )
