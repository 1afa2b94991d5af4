"""End to end, as a user runs it: `gridflex demo` against a real Mosquitto.

Simulated SunSpec inverters replay a frequency step from 50.00 to 49.80 Hz; the Modbus
collector polls them, the OCPP CSMS serves simulated chargers, the Bytewax pipeline derives
the grid frequency and writes the history. Every message on the broker must validate against
the committed JSON Schemas, the step must show as the right deviation on
`.../grid/frequency` and in the `grid_frequency` view.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb
import jsonschema
import pytest

from gridflex.broker import Broker
from gridflex.history import connect
from tests.mqtt_helpers import Subscriber

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"
STEP_AT_S = 12.0


def _committed_validators() -> dict[str, jsonschema.Draft202012Validator]:
    validators = {}
    for path in SCHEMAS.glob("*.schema.json"):
        name = path.name.removesuffix(".schema.json").replace(".v", "/")
        validators[name] = jsonschema.Draft202012Validator(json.loads(path.read_text("utf-8")))
    return validators


@pytest.fixture(scope="module")
def demo_run(mosquitto: Broker, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("demo")
    profile = tmp / "step.csv"
    profile.write_text(f"t_s,freq_hz\n0,50.00\n{STEP_AT_S},50.00\n{STEP_AT_S},49.80\n")
    data_dir = tmp / "data"
    with Subscriber(mosquitto.url, "gridflex/v1/#") as sub:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "gridflex.cli",
                "demo",
                "--inverters",
                "3",
                "--chargers",
                "2",
                "--duration",
                "30",
                "--no-ui",
                "--mqtt-url",
                mosquitto.url,
                "--data-dir",
                str(data_dir),
                "--frequency-profile",
                str(profile),
            ],
            capture_output=True,
            timeout=180,
            check=False,
        )
        messages = list(sub.messages)
    return {"proc": proc, "messages": messages, "data_dir": data_dir}


def history(demo_run: dict[str, object]) -> duckdb.DuckDBPyConnection:
    """DuckDB over the history the demo left."""
    data_dir = demo_run["data_dir"]
    assert isinstance(data_dir, Path)
    return connect(data_dir)


def test_demo_runs_for_its_duration_and_stops_every_part_cleanly(
    demo_run: dict[str, object],
) -> None:
    proc = demo_run["proc"]
    assert isinstance(proc, subprocess.CompletedProcess)
    data_dir = demo_run["data_dir"]
    assert isinstance(data_dir, Path)
    logs = {p.name: p.read_text(errors="replace")[-2000:] for p in (data_dir / "logs").glob("*")}
    assert proc.returncode == 0, (proc.stderr.decode(errors="replace")[-3000:], logs)
    assert (data_dir / "site.toml").exists()


def test_every_message_published_validates_against_the_committed_schemas(
    demo_run: dict[str, object],
) -> None:
    validators = _committed_validators()
    messages = demo_run["messages"]
    assert isinstance(messages, list)
    seen: Counter[str] = Counter()
    for topic, payload in messages:
        # The broker is shared by the whole session: other tests' retained messages show up.
        if not topic.startswith(("gridflex/v1/demo/", "gridflex/v1/deadletter/")):
            continue
        obj = json.loads(payload)
        validators[obj["schema"]].validate(obj)
        seen[obj["schema"]] += 1
    for schema in (
        "telemetry/1",
        "status/1",
        "collector/1",
        "grid_frequency/1",
        "forecast/1",
        "command/1",
        "summary/1",
    ):
        assert seen[schema] > 0, seen


def test_both_asset_kinds_publish_telemetry_with_increasing_seq(
    demo_run: dict[str, object],
) -> None:
    messages = demo_run["messages"]
    assert isinstance(messages, list)
    seqs: dict[tuple[str, str], list[int]] = {}
    kinds = set()
    for topic, payload in messages:
        if topic.endswith("/telemetry"):
            obj = json.loads(payload)
            kinds.add(obj["kind"])
            seqs.setdefault((obj["asset"], obj["boot"]), []).append(obj["seq"])
    assert kinds == {"inverter", "evse"}
    for key, values in seqs.items():
        assert values == sorted(set(values)), key


def test_frequency_step_shows_as_deviation_on_the_grid_topic(demo_run: dict[str, object]) -> None:
    messages = demo_run["messages"]
    assert isinstance(messages, list)
    windows = [json.loads(p) for t, p in messages if t.endswith("/grid/frequency")]
    deviations = [w["deviation_hz"] for w in sorted(windows, key=lambda w: w["window_start_ms"])]
    assert any(abs(d) < 0.005 for d in deviations), deviations
    assert any(abs(d + 0.2) < 0.005 for d in deviations), deviations
    assert abs(deviations[-1] + 0.2) < 0.005, deviations
    # Once at 49.80 Hz it stays there: no window after the first full one goes back up.
    first_low = next(i for i, d in enumerate(deviations) if abs(d + 0.2) < 0.005)
    assert all(abs(d + 0.2) < 0.005 for d in deviations[first_low:]), deviations


def test_frequency_step_is_in_the_grid_frequency_view(demo_run: dict[str, object]) -> None:
    con = history(demo_run)
    rows = con.execute(
        "select deviation_hz from grid_frequency order by window_start_ms"
    ).fetchall()
    deviations = [r[0] for r in rows]
    assert any(abs(d) < 0.005 for d in deviations), deviations
    assert abs(deviations[-1] + 0.2) < 0.005, deviations


def test_droop_response_to_the_step_is_in_the_commands_view(
    demo_run: dict[str, object],
) -> None:
    # The demo dispatches with droop by default: each 10 kW inverter answers 49.80 Hz with
    # (49.80 - 49.964) / (0.05 * 50) * 10 kW = -656 W. A station reports no frequency, so
    # its car follows the site frequency: a charge-only car never discharges; a V2X car
    # discharges unless its departure need holds it (the reason then says so).
    con = history(demo_run)
    rows = con.execute(
        "select c.asset, c.setpoint_w, c.reason, coalesce(bool_or(f.v2x), false) "
        "from commands c left join forecasts f on f.asset = c.asset "
        "where c.freq_hz < 49.9 group by all order by c.asset"
    ).fetchall()
    inverters = {r[0] for r in rows if r[0].startswith("inv-")}
    assert inverters == {"inv-001", "inv-002", "inv-003"}, rows
    for asset, setpoint_w, reason, v2x in rows:
        if asset.startswith("inv-"):
            assert abs(setpoint_w + 656.0) < 0.5, (asset, setpoint_w, reason)
        elif not v2x:
            assert setpoint_w >= 0.0, (asset, setpoint_w, reason)
        else:
            assert setpoint_w < 0.0 or "envelope" in reason, (asset, setpoint_w, reason)


def test_the_loop_closes_inverters_deliver_their_droop_response(
    demo_run: dict[str, object],
) -> None:
    # gridflex control writes each command to its simulated inverter (SunSpec 704): the
    # measured power at the end of the run, seconds after the step, is the droop response.
    con = history(demo_run)
    rows = con.execute(
        "select asset, avg(power_w) from telemetry where kind = 'inverter' "
        "and ts_ms > (select max(ts_ms) - 2000 from telemetry) group by asset order by asset"
    ).fetchall()
    assert [r[0] for r in rows] == ["inv-001", "inv-002", "inv-003"]
    for asset, power_w in rows:
        assert abs(power_w + 656.0) < 10.0, (asset, power_w)


def test_history_holds_every_asset_without_duplicate_readings(demo_run: dict[str, object]) -> None:
    data_dir = demo_run["data_dir"]
    con = history(demo_run)
    per_asset = dict(con.execute("select asset, count(*) from telemetry group by asset").fetchall())
    assert {"inv-001", "inv-002", "inv-003", "cs-001", "cs-002"} <= set(per_asset)
    # The view de-duplicates by design; the files themselves must not repeat a reading
    # either (the sink drops redeliveries within a run).
    raw = f"read_parquet('{data_dir}/telemetry/date=*/part-*.parquet')"
    dupes = con.execute(
        f"select count(*) from (select asset, boot, seq from {raw} "
        "group by all having count(*) > 1)"
    ).fetchall()
    assert dupes == [(0,)]


def test_history_starts_at_the_first_reading_of_every_inverter(
    demo_run: dict[str, object],
) -> None:
    # The pipeline starts after the collectors could publish: its persistent session,
    # opened by the demo first, must have kept the early readings for it.
    data_dir = demo_run["data_dir"]
    messages = demo_run["messages"]
    assert isinstance(data_dir, Path)
    assert isinstance(messages, list)
    published: dict[str, int] = {}
    for topic, payload in messages:
        if "/inverter/" in topic and topic.endswith("/telemetry"):
            obj = json.loads(payload)
            published[obj["asset"]] = min(obj["seq"], published.get(obj["asset"], obj["seq"]))
    con = connect(data_dir)
    stored = dict(
        con.execute(
            "select asset, min(seq) from telemetry where kind = 'inverter' group by asset"
        ).fetchall()
    )
    assert set(published) == {"inv-001", "inv-002", "inv-003"}
    assert stored == published


def test_history_ends_at_the_last_reading_of_every_asset(demo_run: dict[str, object]) -> None:
    # The demo stops the simulators and collectors before the pipeline: the last readings
    # they published (an EV's final meter values included) must be in the history.
    data_dir = demo_run["data_dir"]
    messages = demo_run["messages"]
    assert isinstance(data_dir, Path)
    assert isinstance(messages, list)
    published: dict[str, int] = {}
    for topic, payload in messages:
        if topic.endswith("/telemetry"):
            obj = json.loads(payload)
            published[obj["asset"]] = max(obj["seq"], published.get(obj["asset"], obj["seq"]))
    con = connect(data_dir)
    stored = dict(con.execute("select asset, max(seq) from telemetry group by asset").fetchall())
    assert stored == published
