"""The pure helpers of bench/closed_loop.py (no timing: the benchmark itself is never a test)."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path

import pytest

from bench.closed_loop_analysis import (
    RATING_W,
    STEP_LEVELS_HZ,
    Ack,
    Reading,
    config_problem,
    droop_target_w,
    extra_applications,
    markdown_table,
    pair,
    profile_csv,
    profile_points,
    quantiles,
    results_count,
    settle_latencies,
    site_toml,
    step_levels,
    step_readings,
    step_times,
    write_latencies,
)
from gridflex.config import parse_site
from simulators.grid_frequency import FrequencyProfile

T0 = 1_700_000_000_000


def reading(asset: str, ts: int, freq: float = 50.0, power: float = 0.0, seq: int = -1) -> Reading:
    return Reading(asset, T0 + ts, seq if seq >= 0 else ts // 200, freq, power)


def ack(asset: str, seq: int, ts: int, result: str = "applied", cid: str = "") -> Ack:
    # the reading of seq k at k * 200 ms; the command issued 5 ms after it
    latency = ts - seq * 200
    return Ack(asset, cid or f"{asset}-{seq}", result, T0 + ts, seq, latency, latency - 5)


# --------------------------------------------------------------------------- plan


def test_the_profile_holds_nominal_then_jumps_at_each_step(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text(profile_csv(profile_points(10.0, 4.0, 5)), encoding="utf-8")
    profile = FrequencyProfile.from_csv(path)  # the simulator's own reader
    assert [profile.freq_hz(t) for t in (0.0, 9.99)] == [50.0, 50.0]
    after = [profile.freq_hz(10.0 + 4.0 * k + 0.01) for k in range(5)]
    assert after == [49.8, 50.0, 50.15, 50.0, 49.8]
    assert profile.freq_hz(10.0 + 4.0 - 0.01) == pytest.approx(49.8)  # no ramp in between
    assert profile.freq_hz(1e6) == 49.8


def test_step_levels_cycle_and_every_step_moves_the_droop_target_beyond_min_step() -> None:
    levels = step_levels(9)
    assert levels[:4] == list(STEP_LEVELS_HZ) and levels[4:8] == list(STEP_LEVELS_HZ)
    targets = [0.0, *(droop_target_w(f) for f in levels)]
    assert all(abs(b - a) > 100 for a, b in itertools.pairwise(targets))


def test_droop_target_is_ieee_1547_at_the_bench_rating() -> None:
    # 49.80 Hz: (49.80 - 49.964) / (0.05 * 50) of 10 kW.
    assert droop_target_w(49.8) == pytest.approx(-0.164 / 2.5 * RATING_W)
    assert droop_target_w(50.15) == pytest.approx(0.114 / 2.5 * RATING_W)
    assert droop_target_w(50.02) == 0.0


@pytest.mark.parametrize("local_droop", [False, True])
def test_site_file_is_a_droop_site_of_the_given_ports(tmp_path: Path, local_droop: bool) -> None:
    text = site_toml(
        site="bench",
        mqtt_url="mqtt://127.0.0.1:1883",
        data_dir=tmp_path,
        ports=[5020, 5021, 6000],
        local_droop=local_droop,
    )
    raw = tomllib.loads(text)
    assert raw["dispatch"].get("local_droop", False) is local_droop
    raw["dispatch"].pop("local_droop", None)  # checked by config_problem below
    site = parse_site(raw)
    assert site.dispatch.mode == "droop"
    assert site.modbus.poll_interval_ms == 200
    assert [(a.id, a.port) for a in site.inverters] == [
        ("inv00000", 5020),
        ("inv00001", 5021),
        ("inv00002", 6000),
    ]
    assert all(a.max_discharge_w == a.max_charge_w == RATING_W for a in site.inverters)


def test_config_problem_names_an_unknown_key_and_passes_a_known_site(tmp_path: Path) -> None:
    text = site_toml(site="bench", mqtt_url="mqtt://127.0.0.1:1", data_dir=tmp_path, ports=[1])
    assert config_problem(text) is None
    problem = config_problem(text.replace("[dispatch]\n", "[dispatch]\nno_such_key = 1\n"))
    assert problem is not None and "no_such_key" in problem


# --------------------------------------------------------------------------- analysis


def test_step_readings_are_the_first_reading_at_each_new_level() -> None:
    rows = [
        reading("a", 0),
        reading("a", 200),
        reading("a", 400, 49.8),
        reading("a", 600, 49.8),
        reading("a", 800, 50.0),
        reading("b", 100),
        reading("b", 500, 49.8),
    ]
    seen = step_readings(reversed(rows))  # order of arrival does not matter
    assert [r.ts_ms - T0 for r in seen["a"]] == [400, 800]
    assert [r.ts_ms - T0 for r in seen["b"]] == [500]


def test_a_tiny_frequency_change_is_not_a_step() -> None:
    seen = step_readings([reading("a", 0), reading("a", 200, 50.001), reading("a", 400, 49.8)])
    assert [r.ts_ms - T0 for r in seen["a"]] == [400]


def test_step_time_is_the_earliest_first_reading_per_simulator_process() -> None:
    seen = {
        "a": [reading("a", 430, 49.8), reading("a", 4030, 50.0)],
        "b": [reading("b", 410, 49.8), reading("b", 4090, 50.0)],
        "c": [reading("c", 900, 49.8)],
    }
    times = step_times(seen, {"a": 0, "b": 0, "c": 1})
    assert {k: v - T0 for k, v in times.items()} == {(0, 0): 410, (0, 1): 4030, (1, 0): 900}


def test_write_latency_pairs_each_step_reading_with_its_applied_ack() -> None:
    seen = {"a": [reading("a", 400, 49.8, seq=2)], "b": [reading("b", 600, 49.8, seq=3)]}
    acks = [
        ack("a", 2, 460, "duplicate"),  # wrote nothing: ignored
        ack("a", 2, 430),
        ack("a", 2, 470),  # a second write of it: the first counts
        ack("a", 1, 300),  # another reading's command
    ]
    out = write_latencies(seen, acks)
    assert out.reported == [30.0]  # latency_from_telemetry_ms as the ack says
    assert out.measured == [30.0]  # ack.ts_ms - reading.ts_ms
    assert (out.writer, out.pipeline) == ([25.0], [5.0])  # from issued_ms; the rest
    assert out.missing == 1  # b's step reading caused no write


def test_settle_time_runs_from_the_groups_step_to_the_first_reading_within_10_percent() -> None:
    target = droop_target_w(49.8)  # -656 W; within 10 %: -590 W or lower
    rows = [
        reading("a", 400, 49.8, 0.0),
        reading("a", 600, 49.8, target * 0.85),
        reading("a", 800, 49.8, target * 0.95),
        reading("a", 1000, 49.8, target),
        reading("a", 4400, 50.0, target),
        reading("a", 4600, 50.0, target * 0.05),
    ]
    seen = step_readings([reading("a", 200), *rows])
    times = {(0, 0): T0 + 350, (0, 1): T0 + 4380}
    settled, never = settle_latencies(rows, seen, times, {"a": 0}, [target, droop_target_w(50.0)])
    assert settled == [450.0, 220.0]
    assert never == 0


def test_a_step_never_reached_before_the_next_one_counts_as_never() -> None:
    target = droop_target_w(49.8)
    rows = [
        reading("a", 0),
        reading("a", 400, 49.8, target * 0.5),
        reading("a", 800, 50.0, target),  # reached only after the next step
    ]
    seen = step_readings(rows)
    settled, never = settle_latencies(
        rows, seen, {(0, 0): T0 + 400, (0, 1): T0 + 800}, {"a": 0}, [target, 0.0]
    )
    assert (settled, never) == ([], 2)  # nor the second: 0 W is never within 66 W of -656


def test_extra_applications_count_writes_of_a_command_written_before() -> None:
    acks = [
        ack("a", 1, 10, cid="c1"),
        ack("a", 1, 30, "duplicate", cid="c1"),
        ack("a", 1, 50, "duplicate", cid="c1"),
        ack("b", 1, 10, "clamped", cid="c2"),
        ack("b", 1, 90, "failed", cid="c3"),
        ack("b", 1, 95, cid="c3"),  # the retry after a failure: the first write
    ]
    assert extra_applications(acks) == 0
    assert extra_applications([*acks, ack("a", 1, 70, "clamped", cid="c1")]) == 1
    assert results_count(acks) == {"applied": 2, "duplicate": 2, "clamped": 1, "failed": 1}


# --------------------------------------------------------------------------- table


def test_quantiles_are_nearest_rank_and_none_when_empty() -> None:
    assert quantiles([float(v) for v in range(1, 101)]) == (51.0, 99.0)
    assert quantiles([]) == (None, None)
    assert pair((12.34, None)) == "12.3 / -"


def test_markdown_table_pads_columns_and_right_aligns_numbers() -> None:
    table = markdown_table(["N", "what"], [["100", "central"], ["1000", "x"]], right={0})
    assert table.splitlines() == [
        "|    N | what    |",
        "| ---: | ------- |",
        "|  100 | central |",
        "| 1000 | x       |",
    ]
