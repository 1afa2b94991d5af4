"""Grid-frequency window statistics: golden vectors, RoCoF sign, edge cases."""

from __future__ import annotations

import pytest
from numpy.testing import assert_allclose

from pipelines.frequency import (
    FrequencyAccumulator,
    FrequencySample,
    add_sample,
    merge_accumulators,
    rocof_hz_per_s,
    summarize_window,
    window_start_ms,
    window_stats,
)

T0 = 1_700_000_000_000


def s(asset: str, t_ms: int, freq_hz: float) -> FrequencySample:
    return FrequencySample("s1", asset, T0 + t_ms, freq_hz)


@pytest.mark.parametrize(
    ("ts_ms", "window_ms", "expected"),
    [
        (T0, 1000, T0),  # on a boundary: the window that starts there
        (T0 + 999, 1000, T0),  # last ms of the window
        (T0 + 1000, 1000, T0 + 1000),  # end is exclusive
        (T0 + 1234, 500, T0 + 1000),
        (0, 1000, 0),
    ],
)
def test_window_start_is_floor_aligned_to_epoch(ts_ms: int, window_ms: int, expected: int) -> None:
    assert window_start_ms(ts_ms, window_ms) == expected


def test_window_start_refuses_a_non_positive_window() -> None:
    with pytest.raises(ValueError, match="window_ms"):
        window_start_ms(T0, 0)


def test_window_stats_golden_vector_two_assets() -> None:
    samples = [
        s("a", 0, 50.00),
        s("a", 200, 50.02),
        s("a", 400, 50.03),
        s("a", 600, 50.07),
        s("a", 800, 50.08),
        s("b", 100, 49.95),
        s("b", 600, 49.95),
    ]
    stats = window_stats(samples, window_start_ms=T0, window_ms=1000, nominal_hz=50.0)
    assert stats is not None
    # mean = (250.20 + 99.90) / 7 = 50.014285714...
    assert_allclose(stats.mean_hz, 350.10 / 7, rtol=0, atol=1e-12)
    assert stats.min_hz == 49.95
    assert stats.max_hz == 50.08
    assert_allclose(stats.deviation_hz, 350.10 / 7 - 50.0, atol=1e-12)
    # asset a: Sxy = 0.042 Hz*s, Sxx = 0.4 s^2; asset b is flat: Sxy = 0, Sxx = 0.125 s^2
    # pooled slope = 0.042 / 0.525 = 0.08 Hz/s
    assert_allclose(stats.rocof_hz_per_s, 0.08, atol=1e-9)
    assert (stats.samples, stats.assets) == (7, 2)
    assert (stats.window_start_ms, stats.window_end_ms) == (T0, T0 + 1000)


def test_rocof_of_one_asset_is_its_least_squares_slope() -> None:
    samples = [s("a", 0, 50.00), s("a", 200, 50.02), s("a", 400, 50.03), s("a", 600, 50.07)]
    samples.append(s("a", 800, 50.08))
    # Sxy = 0.042, Sxx = 0.4 -> 0.105 Hz/s
    assert_allclose(rocof_hz_per_s(samples), 0.105, atol=1e-9)


@pytest.mark.parametrize(("slope", "expected_sign"), [(0.5, 1.0), (-0.5, -1.0)])
def test_rocof_sign_follows_the_frequency_trend(slope: float, expected_sign: float) -> None:
    samples = [s("a", t, 50.0 + slope * t / 1000) for t in range(0, 1000, 200)]
    rocof = rocof_hz_per_s(samples)
    assert_allclose(rocof, slope, atol=1e-9)
    assert rocof * expected_sign > 0


def test_rocof_ignores_constant_offsets_between_meters() -> None:
    # a reads 50.1 Hz early in the window, b reads 49.9 Hz late: both flat, so df/dt = 0.
    # One pooled intercept would see a fall of 0.2 Hz over ~0.6 s.
    samples = [s("a", t, 50.1) for t in (0, 100, 200, 300)]
    samples += [s("b", t, 49.9) for t in (600, 700, 800, 900)]
    assert rocof_hz_per_s(samples) == pytest.approx(0.0, abs=1e-12)


def test_empty_window_has_no_stats() -> None:
    assert window_stats([], window_start_ms=T0, window_ms=1000, nominal_hz=50.0) is None


def test_one_sample_window_has_zero_rocof_and_flat_stats() -> None:
    stats = window_stats([s("a", 300, 49.9)], window_start_ms=T0, window_ms=1000, nominal_hz=50.0)
    assert stats is not None
    assert stats.mean_hz == stats.min_hz == stats.max_hz == 49.9
    assert_allclose(stats.deviation_hz, -0.1, atol=1e-12)
    assert stats.rocof_hz_per_s == 0.0
    assert (stats.samples, stats.assets) == (1, 1)


def test_samples_at_one_instant_have_zero_rocof() -> None:
    samples = [s("a", 500, 50.0), s("a", 500, 50.2), s("b", 500, 49.9)]
    assert rocof_hz_per_s(samples) == 0.0


def test_deviation_is_against_the_sites_nominal_frequency() -> None:
    stats = window_stats(
        [s("a", 0, 59.95), s("a", 500, 59.97)], window_start_ms=T0, window_ms=1000, nominal_hz=60.0
    )
    assert stats is not None
    assert_allclose(stats.deviation_hz, -0.04, atol=1e-12)


def test_merging_accumulators_equals_folding_every_sample() -> None:
    samples = [
        s("a", t, 50.0 + 0.3 * t / 1000 + (0.01 if t % 400 else 0)) for t in range(0, 1000, 100)
    ]
    samples += [s("b", t, 49.98 - 0.1 * t / 1000) for t in range(50, 1000, 150)]
    left, right, whole = FrequencyAccumulator(), FrequencyAccumulator(), FrequencyAccumulator()
    for i, sample in enumerate(samples):
        add_sample(left if i % 3 else right, sample)
        add_sample(whole, sample)
    merged = merge_accumulators(left, right)
    a = summarize_window(merged, window_start_ms=T0, window_ms=1000, nominal_hz=50.0)
    b = summarize_window(whole, window_start_ms=T0, window_ms=1000, nominal_hz=50.0)
    assert a is not None and b is not None
    assert (a.samples, a.assets, a.min_hz, a.max_hz) == (b.samples, b.assets, b.min_hz, b.max_hz)
    assert_allclose([a.mean_hz, a.rocof_hz_per_s], [b.mean_hz, b.rocof_hz_per_s], rtol=0, atol=1e-9)
