"""The Streamlit app renders the history it is pointed at (headless AppTest)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.history_helpers import make_history

APP = Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py"


def test_app_shows_assets_and_last_frequency_window(tmp_path: Path) -> None:
    make_history(tmp_path, readings=20)
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.sidebar.text_input[0].input(str(tmp_path)).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["assets"] == "2"
    assert metrics["telemetry rows"] == "40"
    assert metrics["grid frequency (last window)"] == "49.800 Hz"
    table = at.dataframe[0].value
    assert list(table["asset"]) == ["inv-a", "inv-b"]


def test_app_explains_a_missing_history_folder(tmp_path: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.sidebar.text_input[0].input(str(tmp_path / "absent")).run()
    assert not at.exception
    assert "No history folder" in at.warning[0].value
