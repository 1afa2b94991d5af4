"""The app's queries (app.data) on small, known histories."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from app import data
from gridflex.history import refresh_views
from tests.history_helpers import BOUNDARY_MS, add_dispatch, make_history


def test_history_problem_tells_a_missing_from_an_empty_folder(tmp_path: Path) -> None:
    assert "No history folder at" in (data.history_problem(tmp_path / "absent") or "")
    assert "No history in" in (data.history_problem(tmp_path) or "")
    make_history(tmp_path, readings=2)
    assert data.history_problem(tmp_path) is None


def test_fleet_joins_the_newest_reading_with_the_newest_forecast(tmp_path: Path) -> None:
    make_history(tmp_path, readings=5)
    add_dispatch(tmp_path)
    fleet = data.fleet(data.open_history(tmp_path))
    rows = {r["asset"]: r for r in fleet.iter_rows(named=True)}
    assert rows["inv-a"]["v2x"] is True and rows["inv-a"]["max_charge_w"] == 5000.0
    assert rows["inv-b"]["v2x"] is None and rows["inv-b"]["max_charge_w"] is None
    assert rows["inv-b"]["ts_ms"] == max(r["ts_ms"] for r in rows.values())


def test_fleet_response_sums_the_assets_mean_power_per_second(tmp_path: Path) -> None:
    make_history(tmp_path, readings=3)
    response = data.fleet_response(data.open_history(tmp_path))
    assert response["power_w"].to_list() == [0.0, 0.0, 0.0]  # +3600 W and -3600 W
    assert response["assets"].to_list() == [2, 2, 2]


def test_register_energy_counts_a_reset_as_zero_not_minus_the_register() -> None:
    readings = pl.DataFrame(
        {"energy_import_wh": [100.0, 110.0, None, 5.0, 8.0], "energy_export_wh": [0.0] * 5}
    )
    assert data.register_energy(readings) == (13.0, 0.0)


def test_deadband_reads_the_droop_of_the_site_file(tmp_path: Path) -> None:
    assert data.deadband(tmp_path, 60.0).low_hz == 60.0 - 0.036
    (tmp_path / "site.toml").write_text(
        '[site]\nid = "s1"\nnominal_frequency_hz = 60\n[dispatch]\nmode = "droop"\n'
        "[dispatch.droop]\ndb_uf_hz = 0.05\ndb_of_hz = 0.1\n",
        encoding="utf-8",
    )
    band = data.deadband(tmp_path)
    assert (band.nominal_hz, band.low_hz, band.high_hz) == (60.0, 59.95, 60.1)


def test_a_broken_site_file_falls_back_to_the_default_deadband(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text("[site]\nid = 5\n", encoding="utf-8")
    assert data.deadband(tmp_path).source.startswith("IEEE 1547 default")


def test_settlements_is_none_without_the_billing_views(tmp_path: Path) -> None:
    make_history(tmp_path, readings=2)
    con = duckdb.connect()
    refresh_views(con, tmp_path)
    assert data.settlements(con) is None
    assert data.sessions(con) is None
    assert data.settlements(data.open_history(tmp_path)) is not None


def test_fmt_says_n_a_for_what_is_no_number() -> None:
    assert data.fmt(None, ".1f") == "n/a"
    assert data.fmt(float("nan"), ".1f") == "n/a"
    assert data.fmt(1500, ".1f", " kW", scale=1e-3) == "1.5 kW"


def test_a_time_window_keeps_what_happened_from_its_start_on(tmp_path: Path) -> None:
    make_history(tmp_path, readings=20)
    add_dispatch(tmp_path)
    con = data.open_history(tmp_path)
    newest = data.newest_ms(con, "grid_frequency", "window_start_ms")
    assert newest == BOUNDARY_MS + 9_000
    assert data.since(newest, 9_000) == BOUNDARY_MS
    assert data.since(newest, None) is None
    freq = data.frequency(con, BOUNDARY_MS)
    assert len(freq) == 10 and set(freq["mean_hz"]) == {49.8}
    assert len(data.frequency(con)) == 20
    assert len(data.fleet_response(con, BOUNDARY_MS)) == 10
    later = BOUNDARY_MS + 1000  # cmd-a1 (applied) is left out
    assert data.dispatch_timeline(con, later)["command_id"].to_list() == ["cmd-b1", "cmd-b2"]
    assert data.acks_by_result(con, later).rows() == [("clamped", 1)]
    assert data.latencies(con, later)["latency_from_issued_ms"].to_list() == [340]
    assert data.clamp_rules(con, BOUNDARY_MS + 2000).is_empty()
    assert len(data.asset_history(con, "inv-a", BOUNDARY_MS)) == 10
    assert len(data.asset_forecast(con, "inv-a", BOUNDARY_MS + 3000)) == 2
    assert data.newest_ms(data.open_history(tmp_path / "absent"), "commands", "issued_ms") is None
