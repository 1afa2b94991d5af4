"""The invariants the chaos campaign checks, as pure functions over history rows.

``bench/chaos.py`` kills and restarts the processes of a running site, then reads the
history back (DuckDB views) and calls these:

- :func:`seq_gaps`: per (asset, boot) the readings missing inside the seq range the history
  holds (a collector restart is a new boot, so its own outage is not a gap);
- :func:`double_applications`: command ids the writer applied more than once (acks
  ``applied``/``clamped`` beyond the first for one id);
- :func:`register_decreases`: per (asset, boot) the times a cumulative energy register went
  down between two consecutive readings;
- :func:`verdicts`: the table rows (invariant, measured, pass/fail).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from control.ledger import APPLIED_RESULTS

__all__ = [
    "Gap",
    "Recovery",
    "double_applications",
    "register_decreases",
    "seq_gaps",
    "verdicts",
]


@dataclass(frozen=True, slots=True)
class Gap:
    """Readings ``first``..``last`` (seq, inclusive) of (asset, boot) are not in the history."""

    asset: str
    boot: str
    first: int
    last: int

    @property
    def missing(self) -> int:
        """How many readings."""
        return self.last - self.first + 1


@dataclass(frozen=True, slots=True)
class Recovery:
    """One injected fault: which process, when (s into the run), back after (None: never)."""

    target: str
    at_s: float
    back_after_s: float | None


def seq_gaps(rows: Iterable[tuple[str, str, int]]) -> list[Gap]:
    """The holes in each (asset, boot)'s seqs; ``rows`` are (asset, boot, seq), any order.

    Duplicates do not count here (the history de-duplicates); the seqs before the first and
    after the last a boot has in the history are not known to be missing.
    """
    seqs: dict[tuple[str, str], set[int]] = defaultdict(set)
    for asset, boot, seq in rows:
        seqs[(asset, boot)].add(seq)
    gaps: list[Gap] = []
    for (asset, boot), held in sorted(seqs.items()):
        for before, after in pairwise(sorted(held)):
            if after > before + 1:
                gaps.append(Gap(asset, boot, before + 1, after - 1))
    return gaps


def double_applications(acks: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Command ids applied more than once, with how many times; ``acks`` are (id, result)."""
    applied: dict[str, int] = defaultdict(int)
    for command_id, result in acks:
        if result in APPLIED_RESULTS:
            applied[command_id] += 1
    return {cid: n for cid, n in sorted(applied.items()) if n > 1}


def register_decreases(
    rows: Iterable[tuple[str, str, int, float | None, float | None]],
) -> list[tuple[str, str, int]]:
    """(asset, boot, seq) of readings whose import or export register went down.

    ``rows`` are (asset, boot, seq, energy_import_wh, energy_export_wh), any order; a
    missing register (None) is skipped, not compared.
    """
    by_key: dict[tuple[str, str], list[tuple[int, float | None, float | None]]] = defaultdict(list)
    for asset, boot, seq, imported, exported in rows:
        by_key[(asset, boot)].append((seq, imported, exported))
    found: list[tuple[str, str, int]] = []
    for (asset, boot), readings in sorted(by_key.items()):
        last: list[float | None] = [None, None]
        for seq, *registers in sorted(readings):
            for i, value in enumerate(registers):
                if value is None:
                    continue
                held = last[i]
                if held is not None and value < held:
                    found.append((asset, boot, seq))
                last[i] = value
    return found


def verdicts(
    *,
    gaps: Sequence[Gap],
    doubles: dict[str, int],
    decreases: Sequence[tuple[str, str, int]],
    recoveries: Sequence[Recovery],
    back_within_s: float,
    readings: int,
) -> list[tuple[str, str, bool]]:
    """The campaign's table: (invariant, what was measured, passed)."""
    missing = sum(g.missing for g in gaps)
    slow = [r for r in recoveries if r.back_after_s is None or r.back_after_s > back_within_s]
    worst = max((r.back_after_s or float("inf") for r in recoveries), default=0.0)
    return [
        (
            "no seq gap within a boot",
            f"{missing} readings missing in {len(gaps)} gaps (of {readings} in the history)",
            not gaps,
        ),
        ("no command applied twice", f"{len(doubles)} command ids applied twice", not doubles),
        (
            "energy registers continuous",
            f"{len(decreases)} readings with a register going down",
            not decreases,
        ),
        (
            f"every process back within {back_within_s:g} s",
            f"{len(recoveries) - len(slow)}/{len(recoveries)} in time, worst {worst:.1f} s",
            not slow,
        ),
    ]
