"""``gridflex demo`` without processes: its site file, live view, fresh history and stop order."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
from pathlib import Path

import pytest

from gridflex.config import parse_site
from gridflex.contract import DispatchCommand, SiteSummary, command_topic, summary_topic
from gridflex.demo import (
    DEMO_DIRS,
    DemoPlan,
    LiveView,
    add_arguments,
    api_banner,
    app_banner,
    clear_history,
    main,
    plan_parts,
    runs_app,
    site_toml,
    stop_order,
)
from gridflex.demo.parts import _MQTT_ROLE


def _plan(dispatch: str = "droop", fcr_capacity_w: float | None = None) -> DemoPlan:
    return DemoPlan(
        inverters=3,
        chargers=2,
        inverter_base_port=15020,
        ocpp_port=19000,
        mqtt_url="mqtt://127.0.0.1:18830",
        dispatch=dispatch,  # type: ignore[arg-type]
        fcr_capacity_w=fcr_capacity_w,
    )


def _parse(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(args)


# --------------------------------------------------------------------------- site file


@pytest.mark.parametrize("mode", ["off", "droop", "fcr"])
def test_site_file_of_each_dispatch_mode_parses_with_that_mode(mode: str) -> None:
    site = parse_site(tomllib.loads(site_toml(_plan(mode))), "site.toml")
    assert site.dispatch.mode == mode
    assert [a.id for a in site.inverters] == ["inv-001", "inv-002", "inv-003"]
    assert [a.id for a in site.evses] == ["cs-001", "cs-002"]
    # The assets keep their ratings whatever the mode.
    assert {(a.max_charge_w, a.max_discharge_w) for a in site.inverters} == {(10_000, 10_000)}
    assert {(a.max_charge_w, a.max_discharge_w) for a in site.evses} == {(11_000, 11_000)}


def test_fcr_capacity_defaults_to_half_the_fleet_discharge_rating() -> None:
    site = parse_site(tomllib.loads(site_toml(_plan("fcr"))), "site.toml")
    fleet_discharge_w = 3 * 10_000 + 2 * 11_000  # 52 kW
    assert site.dispatch.fcr.capacity_w == fleet_discharge_w / 2
    # The site connection is sized to the whole fleet: it never limits the demo.
    assert site.max_export_w == fleet_discharge_w
    assert site.max_import_w == 3 * 10_000 + 2 * 11_000


def test_fcr_capacity_from_the_command_line_is_written() -> None:
    site = parse_site(tomllib.loads(site_toml(_plan("fcr", 12_345.5))), "site.toml")
    assert site.dispatch.fcr.capacity_w == 12_345.5


def test_droop_and_off_leave_the_site_limits_and_fcr_at_their_defaults() -> None:
    for mode in ("off", "droop"):
        site = parse_site(tomllib.loads(site_toml(_plan(mode, 5_000))), "site.toml")
        assert site.max_import_w is None
        assert site.max_export_w is None
        assert site.dispatch.fcr.capacity_w == 0.0


def test_fcr_without_assets_still_parses() -> None:
    plan = DemoPlan(0, 0, 15020, 19000, "mqtt://127.0.0.1:1883", dispatch="fcr")
    site = parse_site(tomllib.loads(site_toml(plan)), "site.toml")
    assert site.dispatch.fcr.capacity_w == 0.0
    assert site.max_import_w is None


def test_command_line_defaults_are_20_inverters_and_droop() -> None:
    args = _parse([])
    assert args.inverters == 20
    assert args.dispatch == "droop"
    assert args.fcr_capacity_w is None
    assert args.keep_history is False


@pytest.mark.parametrize("bad", ["-1", "nan", "inf", "ten"])
def test_fcr_capacity_must_be_a_finite_non_negative_number(bad: str) -> None:
    with pytest.raises(SystemExit):
        _parse(["--dispatch", "fcr", "--fcr-capacity-w", bad])


def test_unknown_dispatch_mode_is_refused() -> None:
    with pytest.raises(SystemExit):
        _parse(["--dispatch", "fast"])


# --------------------------------------------------------------------------- live view


def _command(reason: str) -> bytes:
    return DispatchCommand(
        site="demo",
        asset="inv-001",
        ts_ms=1_700_000_000_000,
        seq=7,
        command_id="c-7",
        issued_ms=1_700_000_000_010,
        setpoint_w=-4_250.0,
        valid_until_ms=1_700_000_015_010,
        mode="droop",
        reason=reason,
        freq_hz=49.9,
    ).to_json()


def _summary() -> bytes:
    return SiteSummary(
        site="demo",
        ts_ms=1_700_000_000_000,
        seq=3,
        mode="fcr",
        assets_total=5,
        assets_online=4,
        power_w=-1_000.0,
        flex_charge_w=40_000.0,
        flex_discharge_w=30_000.0,
        freq_hz=49.95,
        requested_w=-13_000.0,
        allocated_w=-12_000.0,
        shortfall_w=1_000.0,
    ).to_json()


def _row(screen: str, asset: str) -> str:
    return next(line for line in screen.splitlines() if line.startswith(asset))


def test_view_shows_the_last_command_with_its_reason_shortened_to_fit() -> None:
    view = LiveView("demo", dispatch_mode="droop")
    view.on_message(command_topic("demo", "inv-001"), _command("first"))
    view.on_message(command_topic("demo", "inv-001"), _command("droop: 49.900 Hz " + "x" * 200))
    wide = _row(view.render(width=200), "inv-001")
    assert "-4.25" in wide
    assert "droop: 49.900 Hz" in wide
    assert "first" not in wide
    narrow = _row(view.render(width=90), "inv-001")
    assert len(narrow) <= 90
    assert narrow.endswith("…")
    assert "droop: 49" in narrow


def test_command_before_any_reading_then_telemetry_fills_in_the_kind() -> None:
    view = LiveView("demo")
    view.on_message(command_topic("demo", "inv-001"), _command("r"))
    assert "?" in _row(view.render(), "inv-001").split()[1]
    telemetry = {"power_w": 2_500.0, "soc_pct": 55.0, "freq_hz": 49.98}
    view.on_message("gridflex/v1/demo/inverter/inv-001/telemetry", json.dumps(telemetry).encode())
    row = _row(view.render(), "inv-001").split()
    assert row[1] == "inverter"
    assert row[3:6] == ["+2.50", "55.0", "49.980"]


def test_view_shows_the_site_summary() -> None:
    view = LiveView("demo", dispatch_mode="fcr")
    assert "waiting for the site summary" in view.render()
    view.on_message(summary_topic("demo"), _summary())
    screen = view.render()
    dispatch = next(line for line in screen.splitlines() if line.startswith("dispatch"))
    assert "fcr" in dispatch
    assert "49.950 Hz" in dispatch
    assert "requested -13.0 / allocated -12.0 / shortfall 1.0 kW" in dispatch
    flex = next(line for line in screen.splitlines() if line.startswith("flexibility"))
    assert "charge 40.0 kW" in flex
    assert "discharge 30.0 kW" in flex
    assert "4 of 5 assets online" in flex
    assert "49.950 Hz" in view.headline()


GARBAGE: list[tuple[str, bytes]] = [
    ("gridflex/v1/demo/summary", b"{not json"),
    ("gridflex/v1/demo/summary", b"\xff\xfe\x00"),
    ("gridflex/v1/demo/summary", b"[1, 2, 3]"),
    ("gridflex/v1/demo/summary", b'"text"'),
    ("gridflex/v1/demo/summary", b"null"),
    ("gridflex/v1/demo/summary", b""),
    ("gridflex/v1/demo/summary", b'{"mode": 5, "freq_hz": "x", "requested_w": NaN}'),
    ("gridflex/v1/demo/grid/frequency", b'{"mean_hz": "fast", "deviation_hz": null}'),
    ("gridflex/v1/demo/dispatch/inv-001/command", b'{"setpoint_w": "big", "reason": 7}'),
    ("gridflex/v1/demo/dispatch/inv-002/command", b'{"setpoint_w": true, "reason": ["a"]}'),
    ("gridflex/v1/demo/inverter/inv-001/telemetry", b'{"power_w": "1", "soc_pct": Infinity}'),
    ("gridflex/v1/demo/evse/cs-001/status", b'{"state": {"nested": 1}}'),
    ("gridflex/v1/demo/evse/cs-001/status", b"42"),
    ("gridflex/v1/deadletter/pipeline", b"{}"),
    ("x", b"{}"),
    ("", b"{}"),
    ("gridflex/v1/demo/a/b/c/d/e/f", b"{}"),
    ("gridflex/v1/demo/collector/ocpp/status", b'{"online": true}'),
]


def test_view_survives_any_payload_and_still_renders() -> None:
    view = LiveView("demo", dispatch_mode="droop")
    for topic, payload in GARBAGE:
        view.on_message(topic, payload)
    screen = view.render(width=60)
    assert "gridflex demo" in screen
    assert view.deadletters == 1
    assert "collector" not in view.assets  # a collector status is not an asset
    view.headline()
    # A good message after the garbage still shows.
    view.on_message(summary_topic("demo"), _summary())
    assert "requested -13.0 /" in view.render()


# --------------------------------------------------------------------------- fresh history


def _fill(data_dir: Path) -> None:
    for name in DEMO_DIRS:
        (data_dir / name / "date=2026-01-01").mkdir(parents=True)
        (data_dir / name / "date=2026-01-01" / "part-0.parquet").write_bytes(b"x")
    (data_dir / "site.toml").write_text("[site]\n")
    (data_dir / "notes.md").write_text("mine")
    (data_dir / "my-analysis").mkdir()
    (data_dir / "my-analysis" / "result.csv").write_text("a,b\n")
    (data_dir / "telemetry.csv").write_text("not a history folder")


def test_fresh_history_removes_only_what_the_demo_writes(tmp_path: Path) -> None:
    _fill(tmp_path)
    removed = clear_history(tmp_path)
    assert {p.name for p in removed} == {*DEMO_DIRS, "site.toml"}
    assert {"telemetry", "grid_frequency", "forecasts", "commands", "recovery", "logs"} <= {
        p.name for p in removed
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "my-analysis",
        "notes.md",
        "telemetry.csv",
    ]
    assert (tmp_path / "my-analysis" / "result.csv").read_text() == "a,b\n"


def test_fresh_history_keeps_a_symbolic_link_and_a_file_named_like_a_stream(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.parquet").write_bytes(b"x")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "telemetry").symlink_to(elsewhere, target_is_directory=True)
    (data_dir / "logs").write_text("a file, not the demo's folder")
    assert clear_history(data_dir) == []
    assert (elsewhere / "keep.parquet").exists()
    assert (data_dir / "logs").is_file()


def test_fresh_history_on_an_empty_folder_removes_nothing(tmp_path: Path) -> None:
    assert clear_history(tmp_path) == []


class _BrokerStarted(Exception):
    """Raised where ``main`` would start the broker: it has dealt with the history by then."""


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise _BrokerStarted

    monkeypatch.setattr("gridflex.demo.cli.start_broker", refuse)


@pytest.mark.usefixtures("no_broker")
def test_keep_history_keeps_everything(tmp_path: Path) -> None:
    _fill(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(_BrokerStarted):
        main(_parse(["--keep-history", "--data-dir", str(tmp_path)]))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.usefixtures("no_broker")
def test_without_keep_history_main_starts_fresh(tmp_path: Path) -> None:
    _fill(tmp_path)
    with pytest.raises(_BrokerStarted):
        main(_parse(["--data-dir", str(tmp_path)]))
    assert not (tmp_path / "telemetry").exists()
    assert (tmp_path / "notes.md").exists()
    assert list((tmp_path / "logs").iterdir()) == []  # a new, empty logs folder


# --------------------------------------------------------------------------- stop order


def test_producers_stop_before_the_pipeline() -> None:
    parts = plan_parts(_plan(), Path("site.toml"))
    assert [p.name for p in parts] == [
        "sim-inverters",
        "collect-ocpp",
        "sim-chargers",
        "pipeline",
        "collect-modbus",
        "control",
    ]
    assert [p.name for p in stop_order(parts)] == [
        "control",
        "sim-chargers",
        "sim-inverters",
        "collect-modbus",
        "collect-ocpp",
        "pipeline",
    ]


def test_stop_order_with_one_kind_of_asset() -> None:
    only_chargers = DemoPlan(0, 2, 15020, 19000, "mqtt://127.0.0.1:1883")
    names = [p.name for p in stop_order(plan_parts(only_chargers, Path("site.toml")))]
    # the writer runs for the chargers too (through the CSMS) and stops first
    assert names == ["control", "sim-chargers", "collect-ocpp", "pipeline"]


def test_live_view_shows_the_ack_beside_the_command() -> None:
    view = LiveView("demo")
    view.on_message(
        "gridflex/v1/demo/dispatch/inv-001/command",
        json.dumps({"setpoint_w": -656.0, "reason": "droop f=49.800 Hz: -656 W"}).encode(),
    )
    view.on_message(
        "gridflex/v1/demo/dispatch/inv-001/ack",
        json.dumps({"result": "applied", "applied_w": -656.0}).encode(),
    )
    row = next(line for line in view.render(width=160).splitlines() if "inv-001" in line)
    assert "-0.66" in row
    assert "applied" in row
    assert row.index("applied") < row.index("droop")


# --------------------------------------------------------------------------- the REST API


def test_site_file_carries_the_api_listen_and_token() -> None:
    plan = dataclasses.replace(_plan(), api_port=18123, api_token="demo-token-" + "x" * 32)
    site = parse_site(tomllib.loads(site_toml(plan)), "site.toml")
    assert site.api is not None
    assert (site.api.host, site.api.port) == ("127.0.0.1", 18123)
    assert site.api.token == "demo-token-" + "x" * 32
    assert not site.api.tls


def test_site_file_lists_each_process_metrics_address_and_url() -> None:
    ports = (("collect_modbus", 19101), ("collect_ocpp", 19102), ("pipeline", 19103))
    plan = dataclasses.replace(_plan(), metrics_ports=(*ports, ("control", 19104)))
    text = site_toml(plan)
    metrics = parse_site(tomllib.loads(text), "site.toml").metrics
    assert metrics.collect_modbus == "127.0.0.1:19101"
    assert metrics.collect_ocpp == "127.0.0.1:19102"
    assert metrics.pipeline == "127.0.0.1:19103"
    assert metrics.control == "127.0.0.1:19104"
    for port in range(19101, 19105):
        assert f"http://127.0.0.1:{port}/metrics" in text


def test_site_file_without_metrics_ports_serves_no_metrics() -> None:
    metrics = parse_site(tomllib.loads(site_toml(_plan())), "site.toml").metrics
    assert (metrics.collect_modbus, metrics.collect_ocpp, metrics.pipeline, metrics.control) == (
        None,
        None,
        None,
        None,
    )


def test_site_file_without_an_api_port_has_no_api_table() -> None:
    assert parse_site(tomllib.loads(site_toml(_plan())), "site.toml").api is None


def test_banner_shows_the_api_url_and_token_and_the_view_keeps_its_headline() -> None:
    plan = dataclasses.replace(_plan(), api_port=18123, api_token="t" * 43)
    banner = api_banner(plan)
    assert banner == f"REST API        http://127.0.0.1:18123/api/v1   token {'t' * 43}"
    view = LiveView("demo", api_banner=banner)
    assert view.render().splitlines()[1] == banner
    assert view.headline().startswith("grid frequency")
    # The API is served by `gridflex control`, which the demo runs whenever it has assets.
    assert api_banner(dataclasses.replace(plan, inverters=0)) == banner
    assert api_banner(dataclasses.replace(plan, inverters=0, chargers=0)) is None


# --------------------------------------------------------------------------- analytics app


def test_the_app_runs_over_the_site_files_folder_live_from_its_broker_and_stops_first(
    tmp_path: Path,
) -> None:
    plan = dataclasses.replace(_plan(), app_port=18501)
    site = tmp_path / "site.toml"
    parts = plan_parts(plan, site)
    (app,) = [p for p in parts if p.name == "app"]
    assert app.argv == ["app", "--data-dir", str(tmp_path), "--site", str(site), "--port", "18501"]
    assert app.role == "app"
    assert _MQTT_ROLE["app"] == "integrator"  # read only: the live Fleet page
    assert stop_order(parts)[0].name == "app"
    assert "app" not in [p.name for p in plan_parts(_plan(), tmp_path / "site.toml")]


def test_banner_shows_the_app_url_below_the_api_and_the_headline_stays() -> None:
    plan = dataclasses.replace(_plan(), api_port=18123, api_token="t" * 43, app_port=18501)
    line = app_banner(plan)
    assert line == "analytics app   http://127.0.0.1:18501/"
    assert app_banner(_plan()) is None
    view = LiveView("demo", api_banner=api_banner(plan), app_banner=line)
    assert view.render().splitlines()[1:3] == [api_banner(plan), line]
    assert view.headline().startswith("grid frequency")


def test_the_demo_runs_the_app_unless_no_app_or_no_ui() -> None:
    assert runs_app(_parse([]))
    assert not runs_app(_parse(["--no-app"]))
    assert not runs_app(_parse(["--no-ui"]))  # as the demo's own tests run it
