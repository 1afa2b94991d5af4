"""The pure helpers of bench/dispatch.py (no timing: the benchmark itself is never a test)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bench.dispatch import (
    FCR_SHARE,
    RATING_W,
    STEPS_HZ,
    Received,
    dispatch_site_toml,
    first_arrivals,
    stepped_frequency,
)
from gridflex.config import parse_site


def test_stepped_frequency_walks_the_steps_round_and_round() -> None:
    freq = stepped_frequency(3.0, noise_hz=0.0)
    assert [freq(3.0 * k + 0.1) for k in range(len(STEPS_HZ))] == list(STEPS_HZ)
    assert freq(3.0 * len(STEPS_HZ)) == STEPS_HZ[0]


def test_every_step_leaves_both_dead_bands() -> None:
    pairs = zip(STEPS_HZ, (*STEPS_HZ[1:], STEPS_HZ[0]), strict=True)
    assert all(abs(a - b) > 0.036 for a, b in pairs)
    assert all(f == 50.0 or abs(f - 50.0) > 0.036 for f in STEPS_HZ)


def test_noise_stays_inside_the_fcr_dead_band_at_nominal() -> None:
    freq = stepped_frequency(3.0)
    assert all(abs(freq(0.5) - 50.0) < 0.010 for _ in range(1000))


def test_site_file_is_a_valid_dispatch_site(tmp_path: Path) -> None:
    text = dispatch_site_toml("mqtt://127.0.0.1:1883", tmp_path / "history", 3, "droop")
    site = parse_site(tomllib.loads(text))
    assert site.dispatch.mode == "droop"
    assert site.dispatch.fcr.capacity_w == pytest.approx(FCR_SHARE * 3 * RATING_W)
    assert site.pipeline.recovery
    assert [a.id for a in site.inverters] == ["inv00000", "inv00001", "inv00002"]
    assert all(a.max_discharge_w == RATING_W for a in site.assets)


def test_first_arrivals_keeps_the_earliest_delivery() -> None:
    late, early = Received(20.0, 1, 2, "c1"), Received(10.0, 1, 2, "c1")
    other = Received(15.0, 3, 4, "c2")
    assert first_arrivals([late, other, early]) == {"c1": early, "c2": other}
