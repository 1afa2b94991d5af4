"""The dataflow from TestingSource to TestingSink, on one and on two workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from bytewax.run import cli_main
from bytewax.testing import TestingSink, TestingSource, run_main
from numpy.testing import assert_allclose

from gridflex.config import SiteConfig
from gridflex.contract import DeadLetter, GridFrequency, parse_payload
from gridflex.history import connect
from pipelines.flow import FlowOptions, build_flow
from pipelines.validate import RawMessage
from pipelines.windows import Heartbeat
from tests.pipelines.helpers import (
    T0_MS,
    ack,
    make_site,
    raw,
    raw_ack,
    step_series,
    telemetry,
)


def run(
    messages: list[RawMessage | Heartbeat],
    data_dir: Path,
    *,
    workers: int = 1,
    site: SiteConfig | None = None,
) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    flow = build_flow(
        site or make_site(),
        data_dir,
        options=FlowOptions(flush_interval_s=60),
        source=TestingSource(messages),
        mqtt_sink=TestingSink(out),
    )
    if workers == 1:
        run_main(flow)
    else:
        cli_main(flow, workers_per_process=workers)
    return out


def frequencies(out: list[tuple[str, bytes]]) -> list[GridFrequency]:
    parsed = [parse_payload(p) for t, p in out if t == "gridflex/v1/s1/grid/frequency"]
    assert all(isinstance(g, GridFrequency) for g in parsed)
    return sorted(parsed, key=lambda g: g.window_start_ms)  # type: ignore[attr-defined,return-value]


def dead_letters(out: list[tuple[str, bytes]]) -> list[DeadLetter]:
    return [parse_payload(p) for t, p in out if t == "gridflex/v1/deadletter/pipeline"]  # type: ignore[misc]


def history_rows(data_dir: Path, stream: str) -> list[dict[str, Any]]:
    files = sorted((data_dir / stream).rglob("part-*.parquet"))
    return pq.read_table(files).to_pylist() if files else []


@pytest.mark.parametrize("workers", [1, 2])
def test_frequency_step_gives_the_right_windows_and_history(tmp_path: Path, workers: int) -> None:
    readings = step_series(
        ["inv-1", "inv-2", "inv-3"], start_ms=T0_MS, seconds=4, step_at_ms=T0_MS + 2000
    )
    messages = [raw(p) for p in readings]
    bad = RawMessage("gridflex/v1/s1/inverter/inv-1/telemetry", b"\x00garbage", T0_MS + 700)
    messages.insert(10, bad)

    out = run(messages, tmp_path, workers=workers)

    windows = frequencies(out)
    assert [g.window_start_ms - T0_MS for g in windows] == [0, 1000, 2000, 3000]
    assert_allclose([g.deviation_hz for g in windows], [0.0, 0.0, -0.2, -0.2], atol=1e-9)
    assert_allclose([g.rocof_hz_per_s for g in windows], [0.0] * 4, atol=1e-9)
    assert [(g.samples, g.assets) for g in windows] == [(15, 3)] * 4
    assert all(g.ts_ms == g.window_end_ms == g.window_start_ms + 1000 for g in windows)

    (letter,) = dead_letters(out)
    assert letter.reason.startswith("not_json")
    assert letter.topic == bad.topic

    assert len(history_rows(tmp_path, "telemetry")) == len(readings)
    con = connect(tmp_path)
    assert con.execute("select count(*) from telemetry").fetchall() == [(len(readings),)]
    rows = con.execute(
        "select window_start_ms - ?, round(deviation_hz, 6), samples "
        "from grid_frequency order by 1",
        [T0_MS],
    ).fetchall()
    assert rows == [(0, 0.0, 15), (1000, 0.0, 15), (2000, -0.2, 15), (3000, -0.2, 15)]


def test_a_window_straddling_the_step_has_negative_rocof(tmp_path: Path) -> None:
    readings = step_series(["inv-1"], start_ms=T0_MS, seconds=2, step_at_ms=T0_MS + 1400)
    windows = frequencies(run([raw(p) for p in readings], tmp_path))
    assert windows[0].rocof_hz_per_s == 0.0
    assert windows[1].rocof_hz_per_s < 0
    assert windows[1].min_hz == 49.8 and windows[1].max_hz == 50.0


def test_a_late_sample_is_kept_in_history_but_not_in_its_closed_window(tmp_path: Path) -> None:
    readings = step_series(["inv-1"], start_ms=T0_MS, seconds=3, step_at_ms=T0_MS + 10_000)
    late = telemetry("inv-1", T0_MS + 100, 999, freq_hz=49.0)  # window 0 closed long ago
    out = run([raw(p) for p in readings] + [raw(late, received_ms=T0_MS + 3000)], tmp_path)
    first = frequencies(out)[0]
    assert (first.samples, first.min_hz) == (5, 50.0)
    seqs = {r["seq"] for r in history_rows(tmp_path, "telemetry")}
    assert 999 in seqs


def test_out_of_order_samples_within_the_lateness_still_count(tmp_path: Path) -> None:
    a = telemetry("inv-1", T0_MS + 900, 1, freq_hz=50.1)
    b = telemetry("inv-1", T0_MS + 1200, 2, freq_hz=50.0)
    c = telemetry("inv-2", T0_MS + 800, 1, freq_hz=49.9)  # 400 ms behind the newest: in time
    windows = frequencies(run([raw(a), raw(b), raw(c)], tmp_path))
    assert [(g.window_start_ms - T0_MS, g.samples, g.assets) for g in windows] == [
        (0, 2, 2),
        (1000, 1, 1),
    ]


def test_redelivered_telemetry_is_written_once(tmp_path: Path) -> None:
    readings = [telemetry("inv-1", T0_MS + i * 200, i) for i in range(5)]
    messages = [raw(p) for p in readings] + [raw(readings[3]), raw(readings[4])]
    run(messages, tmp_path)
    assert sorted(r["seq"] for r in history_rows(tmp_path, "telemetry")) == [0, 1, 2, 3, 4]


def test_every_refusal_is_dead_lettered_and_the_stream_goes_on(tmp_path: Path) -> None:
    topic = "gridflex/v1/s1/inverter/inv-1/telemetry"
    messages = [
        raw(b"nope", topic=topic, received_ms=T0_MS),
        raw(telemetry("inv-1", T0_MS + 100, 1, soc_pct=140.0)),
        raw(telemetry("inv-1", T0_MS + 200, 2), topic="gridflex/v1/s1/inverter/inv-9/telemetry"),
        raw(b"still nope", topic=topic, received_ms=T0_MS + 300),
        raw(telemetry("inv-1", T0_MS + 400, 3)),
    ]
    out = run(messages, tmp_path)
    reasons = sorted(d.reason.split(":")[0] for d in dead_letters(out))
    assert reasons == ["not_json", "not_json", "out_of_range", "topic_mismatch"]
    assert [r["seq"] for r in history_rows(tmp_path, "telemetry")] == [3]


@pytest.mark.parametrize("workers", [1, 2])
def test_acks_go_to_the_acks_history_once_and_not_into_the_readings(
    tmp_path: Path, workers: int
) -> None:
    readings = [telemetry(f"inv-{i % 2}", T0_MS + i * 100, i // 2) for i in range(10)]
    applied = raw_ack(ack("inv-0", "c1", seq=0))
    messages = [raw(p) for p in readings]
    messages[3:3] = [applied, raw_ack(ack("inv-1", "c2", seq=1, result="clamped", rules=["ramp"]))]
    messages[7:7] = [applied, raw_ack(ack("inv-0", "c1", result="duplicate", ts_ms=T0_MS + 700))]

    out = run(messages, tmp_path, workers=workers, site=make_site(inverters=("inv-0", "inv-1")))

    acks = sorted(
        (r["asset"], r["command_id"], r["result"], r["rules"])
        for r in history_rows(tmp_path, "acks")
    )
    assert acks == [
        ("inv-0", "c1", "applied", []),
        ("inv-0", "c1", "duplicate", []),
        ("inv-1", "c2", "clamped", ["ramp"]),
    ]
    assert len(history_rows(tmp_path, "telemetry")) == len(readings)
    assert dead_letters(out) == []
    con = connect(tmp_path)
    assert con.execute("select count(*) from acks").fetchall() == [(3,)]


def test_a_bad_ack_is_dead_lettered_and_the_stream_goes_on(tmp_path: Path) -> None:
    messages = [
        raw_ack(b'{"schema": "ack/1"}', topic="gridflex/v1/s1/dispatch/inv-1/ack"),
        raw_ack(ack("inv-1", "c1"), topic="gridflex/v1/s1/dispatch/inv-2/ack"),
        raw(telemetry("inv-1", T0_MS + 400, 3)),
        raw_ack(ack("inv-7", "c3")),  # on its own topic, but no asset of the site
        raw_ack(ack("inv-1", "c2")),
    ]
    out = run(messages, tmp_path, site=make_site(inverters=("inv-1", "inv-2")))
    letters = dead_letters(out)
    assert sorted(d.reason.split(":")[0] for d in letters) == [
        "invalid",
        "topic_mismatch",
        "unknown_asset",
    ]
    assert {d.topic for d in letters} == {
        "gridflex/v1/s1/dispatch/inv-1/ack",
        "gridflex/v1/s1/dispatch/inv-2/ack",
        "gridflex/v1/s1/dispatch/inv-7/ack",
    }
    assert [r["command_id"] for r in history_rows(tmp_path, "acks")] == ["c2"]
    assert [r["seq"] for r in history_rows(tmp_path, "telemetry")] == [3]


def test_a_heartbeat_after_silence_closes_the_last_window_before_more_data(tmp_path: Path) -> None:
    first = telemetry("inv-1", T0_MS + 900, 1, freq_hz=50.0)
    straggler = telemetry("inv-2", T0_MS + 950, 1, freq_hz=49.0)
    messages: list[RawMessage | Heartbeat] = [
        raw(first, received_ms=T0_MS + 910),
        Heartbeat(T0_MS + 1000),  # within the idle timeout (2 s): the window stays open
        Heartbeat(T0_MS + 4000),  # silence: the watermark passes the window's end
        raw(straggler, received_ms=T0_MS + 4100),  # too late for window 0
    ]
    out = run(messages, tmp_path)
    (window,) = frequencies(out)
    assert (window.samples, window.min_hz) == (1, 50.0)
    assert len(history_rows(tmp_path, "telemetry")) == 2


def test_a_heartbeat_within_the_idle_timeout_lets_a_slow_reading_count(tmp_path: Path) -> None:
    first = telemetry("inv-1", T0_MS + 900, 1, freq_hz=50.0)
    slow = telemetry("inv-2", T0_MS + 950, 1, freq_hz=49.0)
    messages: list[RawMessage | Heartbeat] = [
        raw(first, received_ms=T0_MS + 910),
        Heartbeat(T0_MS + 2500),
        raw(slow, received_ms=T0_MS + 2600),
    ]
    (window,) = frequencies(run(messages, tmp_path))
    assert (window.samples, window.min_hz) == (2, 49.0)
