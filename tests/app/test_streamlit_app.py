"""Every page of the Streamlit app renders the history it is pointed at (headless AppTest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

import app
from app import ui
from tests.history_helpers import SOC_AT_DEPARTURE_PCT, add_dispatch, make_history

TIMEOUT_S = 60


def _app(data_dir: Path, monkeypatch: pytest.MonkeyPatch, page: str | None = None) -> AppTest:
    monkeypatch.setenv(ui.DATA_DIR_ENV, str(data_dir))
    at = AppTest.from_file(str(app.MAIN_SCRIPT), default_timeout=TIMEOUT_S).run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _charts(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(chart.proto.spec) for chart in at.get("vega_lite_chart")]


def _chart_data(at: AppTest) -> list[pl.DataFrame]:
    """Every dataset of every chart on the page (Arrow IPC in the chart's message)."""
    frames = []
    for chart in at.get("vega_lite_chart"):
        for dataset in chart.proto.datasets:
            table = pa.ipc.open_stream(dataset.data.data).read_all()
            frames.append(pl.from_arrow(table))
    return frames


@pytest.fixture
def history(tmp_path: Path) -> Path:
    make_history(tmp_path, readings=20)
    add_dispatch(tmp_path)
    return tmp_path


def test_fleet_page_shows_each_asset_its_status_v2x_and_flexibility(
    history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(history, monkeypatch)  # the default page
    assert [t.value for t in at.title] == ["Fleet"]
    metrics = _metrics(at)
    assert metrics["assets"] == "2"
    assert metrics["fleet power"] == "+0.0 kW"  # +3.6 kW and -3.6 kW
    assert metrics["V2X capable"] == "1"
    assert metrics["discharge available"] == "4.0 kW"
    table = at.dataframe[0].value
    assert list(table["asset"]) == ["inv-a", "inv-b"]
    assert list(table["status"]) == ["charging", "discharging"]
    assert list(table["power_w"]) == [3600.0, -3600.0]
    assert table["max_discharge_w"].iloc[0] == 4000.0
    assert len(_charts(at)) == 2  # power and SoC per asset


def test_frequency_page_draws_the_trace_the_deadband_and_the_fleet_on_one_time_axis(
    history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(history, monkeypatch, "views/frequency.py")
    metrics = _metrics(at)
    assert metrics["last window"] == "49.800 Hz"
    assert metrics["lowest"] == "49.800 Hz"
    assert metrics["deadband"] == "±36 mHz"
    assert "deadband 49.964 - 50.036 Hz (IEEE 1547 default" in at.caption[0].value
    combined = _charts(at)[0]
    assert combined["resolve"]["scale"]["y"] == "independent"  # Hz left, W right, one x
    assert len(combined["layer"]) == 2
    frames = _chart_data(at)
    lines = next(f for f in frames if "line" in f.columns)
    assert sorted(lines["mean_hz"].round(3).to_list()) == [49.964, 50.0, 50.036]
    fleet = next(f for f in frames if "power_w" in f.columns)
    assert len(fleet) == 20  # one point a second


def test_frequency_page_takes_the_deadband_from_the_site_file(
    history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (history / "site.toml").write_text(
        '[site]\nid = "s1"\n[dispatch]\nmode = "fcr"\n[dispatch.fcr]\ndeadband_hz = 0.02\n',
        encoding="utf-8",
    )
    at = _app(history, monkeypatch, "views/frequency.py")
    assert _metrics(at)["deadband"] == "±20 mHz"
    assert "site.toml: FCR deadband" in at.caption[0].value


def test_dispatch_page_counts_acks_clamps_and_latency(
    history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(history, monkeypatch, "views/dispatch.py")
    metrics = _metrics(at)
    assert metrics["commands"] == "3"
    assert metrics["applied"] == "1"
    assert metrics["clamped"] == "1"
    assert metrics["median latency"] == "230 ms"  # of 120 and 340 ms
    table = at.dataframe[0].value
    assert list(table["command_id"]) == ["cmd-b2", "cmd-b1", "cmd-a1"]  # newest first
    assert list(table["result"]) == ["no ack", "clamped", "applied"]
    frames = _chart_data(at)
    rules = next(f for f in frames if "rule" in f.columns)
    assert rules.rows() == [("max_discharge_w", 1)]
    setpoints = next(f for f in frames if "series" in f.columns)
    requested = setpoints.filter(pl.col("series") == "requested_w")
    assert sorted(requested["w"].to_list()) == [-6000.0, -2000.0, -1000.0]
    applied = setpoints.filter(pl.col("series") == "applied_w")
    assert sorted(applied["w"].to_list()) == [-5000.0, -2000.0]
    assert len(_charts(at)) == 4  # timeline, setpoints, clamps, latency histogram


def test_billing_page_settles_per_interval_with_totals_and_a_csv(
    history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(history, monkeypatch, "views/billing.py")
    metrics = _metrics(at)
    # 19 register steps of 10 Wh per asset, 10 before the 12:00 boundary and 9 after it.
    assert metrics["energy imported"] == "0.190 kWh"
    assert metrics["energy exported"] == "0.190 kWh"
    assert metrics["intervals"] == "2"
    totals, settlements = (df.value for df in at.dataframe)
    assert list(totals["asset"]) == ["inv-a", "inv-b"]
    assert list(totals["energy_import_wh"]) == [190.0, 0.0]
    assert sorted(settlements["energy_import_wh"]) == [0.0, 0.0, 90.0, 100.0]
    assert set(settlements["quality"]) == {"ok"}
    assert [b.label for b in at.get("download_button")] == ["Download settlements (CSV)"]


def test_asset_page_shows_one_assets_history_and_its_forecast(
    history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(history, monkeypatch, "views/asset.py")
    assert at.selectbox[0].value == "inv-a"
    metrics = _metrics(at)
    assert metrics["power"] == "+3600 W"
    assert metrics["status"] == "charging"
    assert metrics["register energy"] == "+190 / -0 Wh"
    soc = next(f for f in _chart_data(at) if "series" in f.columns and "pct" in f.columns)
    assert set(soc["series"]) == {"measured", "forecast at departure", "target"}
    forecast = soc.filter(pl.col("series") == "forecast at departure")
    assert set(forecast["pct"]) == {SOC_AT_DEPARTURE_PCT}

    at.selectbox[0].select("inv-b").run()
    assert not at.exception
    assert _metrics(at)["register energy"] == "+0 / -190 Wh"
    assert "No forecasts for this asset." in [c.value for c in at.caption]


@pytest.mark.parametrize("script", [page[0] for page in app.PAGES])
@pytest.mark.parametrize("folder", ["empty", "missing"])
def test_every_page_explains_an_empty_or_missing_history(
    script: str, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path if folder == "empty" else tmp_path / "absent"
    at = _app(data_dir, monkeypatch, script)
    messages = [i.value for i in at.info]
    expected = "No history in" if folder == "empty" else "No history folder at"
    assert len(messages) == 1 and messages[0].startswith(expected), messages
    assert not at.metric


def test_the_sidebar_points_the_app_at_another_folder(
    history: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _app(tmp_path_factory.mktemp("empty"), monkeypatch)
    assert not at.metric
    at.sidebar.text_input[0].input(str(history)).run()
    assert not at.exception
    assert _metrics(at)["assets"] == "2"
