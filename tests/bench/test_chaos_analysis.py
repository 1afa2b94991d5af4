"""The chaos campaign's invariants (pure)."""

from __future__ import annotations

from bench.chaos_analysis import (
    Gap,
    Recovery,
    double_applications,
    register_decreases,
    seq_gaps,
    verdicts,
)


def test_seq_gaps_are_holes_within_a_boot_only() -> None:
    rows = [("a", "b1", s) for s in (1, 2, 3, 6, 7, 7, 9)] + [("a", "b2", s) for s in (1, 2)]
    rows += [("c", "b1", 5)]
    assert seq_gaps(rows) == [Gap("a", "b1", 4, 5), Gap("a", "b1", 8, 8)]
    assert [g.missing for g in seq_gaps(rows)] == [2, 1]


def test_double_applications_count_applied_and_clamped_only() -> None:
    acks = [("c1", "applied"), ("c1", "duplicate"), ("c2", "clamped"), ("c2", "applied")]
    acks += [("c3", "failed"), ("c3", "applied"), ("c4", "rejected"), ("c4", "rejected")]
    assert double_applications(acks) == {"c2": 2}


def test_register_decreases_per_boot_in_seq_order() -> None:
    rows = [
        ("a", "b1", 2, 110.0, 5.0),
        ("a", "b1", 1, 100.0, 5.0),
        ("a", "b1", 3, 90.0, None),  # import went down
        ("a", "b1", 4, 120.0, 4.0),  # export went down (compared with seq 2)
        ("a", "b2", 1, 0.0, 0.0),  # a new boot starts afresh
    ]
    assert register_decreases(rows) == [("a", "b1", 3), ("a", "b1", 4)]


def test_verdicts_pass_and_fail() -> None:
    ok = verdicts(
        gaps=[],
        doubles={},
        decreases=[],
        recoveries=[Recovery("pipeline", 3.0, 2.5)],
        back_within_s=5.0,
        readings=100,
    )
    assert all(passed for _, _, passed in ok)
    bad = verdicts(
        gaps=[Gap("a", "b", 4, 5)],
        doubles={"c": 2},
        decreases=[("a", "b", 3)],
        recoveries=[Recovery("pipeline", 3.0, None)],
        back_within_s=5.0,
        readings=100,
    )
    assert [passed for _, _, passed in bad] == [False] * 4
    assert bad[0][1].startswith("2 readings missing in 1 gaps")
