"""``[history] retention_days``: one number for every stream, or a table per stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridflex.config import HISTORY_STREAMS, ConfigError, load_site
from gridflex.history import STREAMS


def _load(tmp_path: Path, history: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "site.toml"
    path.write_text(f'[site]\nid = "s1"\n\n{history}\n', encoding="utf-8")
    return load_site(path)


def test_the_config_knows_every_history_stream() -> None:
    assert HISTORY_STREAMS == STREAMS


def test_without_retention_everything_is_kept(tmp_path: Path) -> None:
    site = _load(tmp_path, "[history]\ndir = 'data'")
    assert all(site.history.retention_for(s) is None for s in STREAMS)


def test_one_number_applies_to_every_stream(tmp_path: Path) -> None:
    site = _load(tmp_path, "[history]\nretention_days = 400")
    assert {site.history.retention_for(s) for s in STREAMS} == {400}


def test_a_table_sets_some_streams_and_keeps_the_others(tmp_path: Path) -> None:
    site = _load(tmp_path, "[history.retention_days]\ntelemetry = 400\ngrid_frequency = 30")
    assert site.history.retention_for("telemetry") == 400
    assert site.history.retention_for("grid_frequency") == 30
    assert site.history.retention_for("transactions") is None


WHOLE = "expected a whole number of days"


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ("[history]\nretention_days = 0", "retention_days: expected 1 to 36500 days, got 0"),
        ("[history]\nretention_days = true", f"retention_days: {WHOLE}, got true"),
        ("[history]\nretention_days = 1.5", f"retention_days: {WHOLE}, got 1.5"),
        (
            "[history.retention_days]\ntelemetry = '4'",
            f"retention_days.telemetry: {WHOLE}, got '4'",
        ),
        (
            "[history.retention_days]\ntelemtry = 4",
            "retention_days.telemtry: expected one of the streams",
        ),
    ],
)
def test_a_bad_retention_names_the_file_the_key_and_what_was_expected(
    tmp_path: Path, history: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, history)
    where = f"config error in {tmp_path / 'site.toml'}: history."
    assert str(info.value).startswith(where + message)
