"""frequency_response.ipynb, executed by a kernel: the droop curve against the delivered power."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.history_helpers import (
    BOUNDARY_MS,
    DROOP_10KW_AT_49_80_W,
    SITE_TOML,
    make_response_history,
)
from tests.notebooks.notebook_helpers import errors, run_notebook, stream_text

NAME = "frequency_response"


def test_notebook_measures_each_event_against_the_droop_of_the_assets_that_took_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "history"
    data.mkdir()
    make_response_history(data)
    _, results = run_notebook(NAME, data, tmp_path / "results", monkeypatch)
    assert results is not None
    assert results["mode"] == "droop"
    assert results["deadband_hz"] == pytest.approx([49.964, 50.036])
    [event] = results["events"]
    assert event["start_ms"] == BOUNDARY_MS
    assert event["windows"] == 10
    # The first SETTLE_S (2 s) of the event are left out of its error.
    assert event["settled_windows"] == 8
    # Two 10 kW inverters; the charge-only car's station expects (and gives) nothing.
    assert event["expected_w"] == pytest.approx(2 * DROOP_10KW_AT_49_80_W)
    assert event["delivered_w"] == pytest.approx(1.5 * DROOP_10KW_AT_49_80_W)
    assert event["error_w"] == pytest.approx(-0.5 * DROOP_10KW_AT_49_80_W)
    assert event["delivered_pct"] == pytest.approx(75.0)
    by_asset = {row["asset"]: row for row in results["assets"]}
    assert by_asset["inv-a"]["delivered_w"] == pytest.approx(DROOP_10KW_AT_49_80_W)
    assert by_asset["inv-b"]["delivered_w"] == pytest.approx(DROOP_10KW_AT_49_80_W / 2)
    assert by_asset["cs-1"]["base_w"] == pytest.approx(5000.0)
    assert by_asset["cs-1"]["delivered_w"] == pytest.approx(0.0)
    assert by_asset["cs-1"]["expected_w"] == pytest.approx(0.0)


def test_notebook_measures_an_fcr_site_against_its_capacity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fcr = SITE_TOML.replace(
        'mode = "droop"', 'mode = "fcr"\n\n[dispatch.fcr]\ncapacity_w = 2000\nfull_at_hz = 0.2'
    )
    data = tmp_path / "history"
    data.mkdir()
    make_response_history(data, site_toml=fcr)
    _, results = run_notebook(NAME, data, tmp_path / "results", monkeypatch)
    assert results is not None
    assert results["mode"] == "fcr"
    assert results["deadband_hz"] == pytest.approx([49.99, 50.01])
    [event] = results["events"]
    # 200 mHz below nominal: full activation, the whole capacity, discharging.
    assert event["expected_w"] == pytest.approx(-2000.0)
    assert event["delivered_w"] == pytest.approx(1.5 * DROOP_10KW_AT_49_80_W)
    assert event["error_w"] == pytest.approx(2000.0 + 1.5 * DROOP_10KW_AT_49_80_W)
    # The FCR law has no per-asset share.
    assert all(row["expected_w"] is None for row in results["assets"])


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_notebook_on_a_folder_without_history_says_so_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: str
) -> None:
    data = tmp_path / folder
    if folder == "empty":
        data.mkdir()
    nb, results = run_notebook(NAME, data, tmp_path / "results", monkeypatch)
    assert errors(nb) == []
    text = stream_text(nb)
    assert "No history folder" in text if folder == "missing" else "has no telemetry yet" in text
    assert results is not None
    assert results["events"] == []
