"""billing_reconciliation.ipynb, executed by a kernel: registers against integrated power."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.history_helpers import BOUNDARY_MS, make_metered_history
from tests.notebooks.notebook_helpers import errors, run_notebook, stream_text

NAME = "billing_reconciliation"
BEFORE = BOUNDARY_MS - 15 * 60_000


def test_notebook_flags_the_intervals_whose_register_drifts_more_than_one_percent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "history"
    data.mkdir()
    make_metered_history(data)
    _, results = run_notebook(NAME, data, tmp_path / "results", monkeypatch)
    assert results is not None
    rows = {(r["asset"], r["interval_start_ms"]): r for r in results["intervals"]}
    assert set(rows) == {(a, k) for a in ("inv-a", "inv-b") for k in (BEFORE, BOUNDARY_MS)}
    # inv-a's register counts what its power says: no flag.
    assert rows[("inv-a", BEFORE)]["register_net_wh"] == pytest.approx(100.0)
    assert rows[("inv-a", BEFORE)]["integrated_net_wh"] == pytest.approx(100.0)
    assert rows[("inv-a", BOUNDARY_MS)]["register_net_wh"] == pytest.approx(90.0)
    assert not rows[("inv-a", BEFORE)]["flagged"]
    assert not rows[("inv-a", BOUNDARY_MS)]["flagged"]
    # inv-b's counts 5 % more, in both intervals.
    assert rows[("inv-b", BEFORE)]["register_net_wh"] == pytest.approx(105.0)
    assert rows[("inv-b", BEFORE)]["integrated_net_wh"] == pytest.approx(100.0)
    assert rows[("inv-b", BOUNDARY_MS)]["register_net_wh"] == pytest.approx(94.5)
    assert rows[("inv-b", BEFORE)]["difference_pct"] == pytest.approx(100 * 5 / 105)
    assert rows[("inv-b", BEFORE)]["flagged"]
    assert rows[("inv-b", BOUNDARY_MS)]["flagged"]
    assert results["flagged"] == 2
    # No gap, no reset: both flags are unexplained by the settlement's quality.
    assert results["unexplained"] == 2
    per_asset = {r["asset"]: r for r in results["assets"]}
    assert per_asset["inv-a"]["flagged"] == 0
    assert per_asset["inv-b"]["flagged"] == 2
    assert per_asset["inv-b"]["register_net_wh"] == pytest.approx(199.5)


def test_notebook_on_a_missing_folder_says_so_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb, results = run_notebook(NAME, tmp_path / "missing", tmp_path / "results", monkeypatch)
    assert errors(nb) == []
    assert "No history folder" in stream_text(nb)
    assert results is not None
    assert results["intervals"] == []
