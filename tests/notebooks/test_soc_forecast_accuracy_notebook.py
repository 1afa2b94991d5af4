"""soc_forecast_accuracy.ipynb, executed by a kernel: forecast SoC at departure vs reached."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.history_helpers import (
    FORECASTS_BEFORE_DEPARTURE,
    SOC_AT_DEPARTURE_PCT,
    make_forecast_history,
)
from tests.notebooks.notebook_helpers import errors, run_notebook, stream_text

NAME = "soc_forecast_accuracy"


def test_notebook_scores_the_forecasts_whose_departure_the_history_covers_by_horizon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "history"
    data.mkdir()
    make_forecast_history(data)
    nb, results = run_notebook(NAME, data, tmp_path / "results", monkeypatch)
    assert results is not None
    # cs-1's four forecasts are scored against the 80 % it had at departure (not the 100 %
    # of the readings after it); cs-2's departure is after the history: pending; the
    # battery's forecast has no departure: not counted.
    assert results["scored"] == 4
    assert results["pending"] == 1
    assert results["unscored"] == 0
    errors_by_horizon = {r["horizon_ms"]: r["error_pct"] for r in results["forecasts"]}
    assert errors_by_horizon == {
        s * 1000: pytest.approx(soc - SOC_AT_DEPARTURE_PCT) for s, soc in FORECASTS_BEFORE_DEPARTURE
    }
    buckets = {r["horizon"]: r for r in results["by_horizon"]}
    assert list(buckets) == ["< 5 min", "5-15 min", "30-60 min", "2-4 h"]
    assert buckets["2-4 h"]["bias_pct"] == pytest.approx(4.0)
    assert buckets["30-60 min"]["mae_pct"] == pytest.approx(1.0)
    assert buckets["5-15 min"]["bias_pct"] == pytest.approx(0.5)
    assert buckets["< 5 min"]["bias_pct"] == pytest.approx(-1.0)
    assert buckets["< 5 min"]["mae_pct"] == pytest.approx(1.0)
    assert all(b["forecasts"] == 1 for b in buckets.values())
    assert errors(nb) == []
    assert "4 scored, 1 pending" in stream_text(nb)


def test_notebook_on_an_empty_folder_says_so_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "empty"
    data.mkdir()
    nb, results = run_notebook(NAME, data, tmp_path / "results", monkeypatch)
    assert errors(nb) == []
    assert "has no telemetry yet" in stream_text(nb)
    assert results is not None
    assert results["scored"] == 0
