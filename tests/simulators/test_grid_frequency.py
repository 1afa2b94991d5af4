"""Grid frequency sources: OU statistics, disturbances, seeding, CSV replay."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from simulators.grid_frequency import (
    FrequencyProfile,
    ProfileError,
    StochasticFrequency,
    disturbance_hz,
    ou_step,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _series(source: StochasticFrequency, seconds: float, dt_s: float = 0.5) -> list[float]:
    return [source.freq_hz(i * dt_s) for i in range(int(seconds / dt_s))]


def test_ou_step_without_noise_decays_with_its_time_constant() -> None:
    assert ou_step(0.1, 30.0, 30.0, 0.02, 0.0) == pytest.approx(0.1 / math.e)


def test_disturbance_is_zero_before_and_recovers_after() -> None:
    assert disturbance_hz(-1.0, -0.2, 20.0) == 0.0
    assert disturbance_hz(0.0, -0.2, 20.0) == pytest.approx(-0.2)
    assert disturbance_hz(20.0, -0.2, 20.0) == pytest.approx(-0.2 / math.e)


def test_same_seed_gives_the_same_series() -> None:
    a = _series(StochasticFrequency(seed=7), 120)
    b = _series(StochasticFrequency(seed=7), 120)
    c = _series(StochasticFrequency(seed=8), 120)
    assert a == b
    assert a != c


def test_ou_statistics_match_nominal_and_sigma_without_events() -> None:
    source = StochasticFrequency(
        nominal_hz=50.0, sigma_hz=0.02, tau_s=30.0, events_per_hour=0, seed=1
    )
    series = _series(source, 4 * 3600, dt_s=1.0)
    assert statistics.fmean(series) == pytest.approx(50.0, abs=0.005)
    assert statistics.pstdev(series) == pytest.approx(0.02, rel=0.25)


def test_disturbances_make_deep_dips_at_their_rate() -> None:
    calm = StochasticFrequency(events_per_hour=0, seed=3)
    stressed = StochasticFrequency(events_per_hour=30, seed=3)
    assert min(_series(calm, 3600)) > 49.9
    assert min(_series(stressed, 3600)) < 49.85


def test_sixty_hz_grid_centres_on_sixty() -> None:
    source = StochasticFrequency(nominal_hz=60.0, events_per_hour=0, seed=2)
    assert statistics.fmean(_series(source, 3600)) == pytest.approx(60.0, abs=0.01)


def test_query_back_in_time_repeats_the_last_value() -> None:
    source = StochasticFrequency(seed=4)
    at_ten = source.freq_hz(10.0)
    assert source.freq_hz(5.0) == at_ten


def test_example_step_profile_is_50_until_5_s_then_49_8() -> None:
    profile = FrequencyProfile.from_csv(EXAMPLES / "frequency-step.csv")
    assert profile.freq_hz(0.0) == 50.0
    assert profile.freq_hz(4.99) == 50.0
    assert profile.freq_hz(5.0) == pytest.approx(49.8)
    assert profile.freq_hz(3600.0) == pytest.approx(49.8)


def test_profile_interpolates_linearly_and_holds_the_ends() -> None:
    profile = FrequencyProfile((2.0, 4.0), (50.0, 49.9))
    assert profile.freq_hz(0.0) == 50.0
    assert profile.freq_hz(3.0) == pytest.approx(49.95)
    assert profile.freq_hz(10.0) == pytest.approx(49.9)


def test_profile_file_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("t_s,freq_hz\n0,50\n1,abc\n", encoding="utf-8")
    with pytest.raises(ProfileError, match=r"bad.csv:3: expected numbers"):
        FrequencyProfile.from_csv(bad)
    backwards = tmp_path / "back.csv"
    backwards.write_text("t_s,freq_hz\n2,50\n1,50\n", encoding="utf-8")
    with pytest.raises(ProfileError, match="backwards"):
        FrequencyProfile.from_csv(backwards)
    header = tmp_path / "header.csv"
    header.write_text("time,hz\n0,50\n", encoding="utf-8")
    with pytest.raises(ProfileError, match="header"):
        FrequencyProfile.from_csv(header)
