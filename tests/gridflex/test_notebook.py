"""gridflex.notebook: the history a notebook opens, the site's response law, the results file."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from gridflex.config import SiteConfig, parse_site
from gridflex.notebook import ResponseLaw, data_dir_from_env, open_history, save_results
from tests.history_helpers import DROOP_10KW_AT_49_80_W, SITE_TOML, make_metered_history


def _site(text: str = SITE_TOML) -> SiteConfig:
    return parse_site(tomllib.loads(text))


def test_droop_law_sums_the_inverters_and_only_the_stations_whose_car_can_discharge() -> None:
    site = _site()
    charge_only = ResponseLaw.from_site(site)
    assert charge_only.response_w(49.8) == pytest.approx(2 * DROOP_10KW_AT_49_80_W)
    v2x = ResponseLaw.from_site(site, v2x={"cs-1": 5500.0})
    # The car's own limit (5.5 kW) caps the station's 11 kW rating.
    assert v2x.response_w(49.8) == pytest.approx(DROOP_10KW_AT_49_80_W * 2.55)
    # Over-frequency: every asset charges with its charge rating, the station's too.
    assert charge_only.response_w(50.2) == pytest.approx(-DROOP_10KW_AT_49_80_W * 3.1)
    assert charge_only.only(["inv-a"]).response_w(49.8) == pytest.approx(DROOP_10KW_AT_49_80_W)
    assert charge_only.deadband_hz() == pytest.approx((49.964, 50.036))
    assert charge_only.response_w(49.97) == 0.0


def test_fcr_law_is_the_capacity_times_the_activation_and_off_gives_nothing() -> None:
    fcr = _site(
        SITE_TOML.replace('mode = "droop"', 'mode = "fcr"\n\n[dispatch.fcr]\ncapacity_w = 8000')
    )
    law = ResponseLaw.from_site(fcr)
    assert law.deadband_hz() == pytest.approx((49.99, 50.01))
    # r = (0.105 - 0.010) / (0.200 - 0.010) = 0.5
    assert law.response_w(49.895) == pytest.approx(-4000.0)
    assert law.response_w(50.3) == pytest.approx(8000.0)
    off = ResponseLaw.from_site(_site(SITE_TOML.replace('mode = "droop"', 'mode = "off"')))
    assert off.response_w(49.5) == 0.0


def test_open_history_names_a_missing_folder_and_an_unusable_site_file(tmp_path: Path) -> None:
    missing = open_history(tmp_path / "nowhere")
    assert missing.empty
    assert missing.problem is not None and "No history folder" in missing.problem
    data = tmp_path / "h"
    data.mkdir()
    (data / "site.toml").write_text("[site]\nid = 's1'\n[[assets]]\nid = 'x'\n", "utf-8")
    make_metered_history(data)
    opened = open_history(data)
    assert not opened.empty
    assert opened.readings == 40
    assert opened.site is None
    assert any("not used" in note for note in opened.notes)


def test_data_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDFLEX_DATA_DIR", "/srv/history")
    assert data_dir_from_env() == Path("/srv/history")


def test_results_are_written_only_when_the_environment_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRIDFLEX_NOTEBOOK_RESULTS", raising=False)
    assert save_results("x", {"a": 1}) is None
    monkeypatch.setenv("GRIDFLEX_NOTEBOOK_RESULTS", str(tmp_path / "out"))
    path = save_results("x", {"a": 1})
    assert path == tmp_path / "out" / "x.json"
    assert json.loads(path.read_text("utf-8")) == {"a": 1}
