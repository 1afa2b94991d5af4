"""Where ``gridflex pipeline`` keeps its write-ahead log, and when it keeps none."""

from __future__ import annotations

from pathlib import Path

from gridflex.config import SiteConfig, parse_site
from pipelines.cli import wal_dir
from pipelines.flow import FlowOptions, mqtt_source, wal_retention_s


def site(tmp_path: Path, **pipeline: object) -> SiteConfig:
    return parse_site(
        {
            "site": {"id": "s1"},
            "mqtt": {"url": "mqtt://127.0.0.1:1883"},
            "history": {"dir": str(tmp_path / "hist")},
            "pipeline": pipeline,
        }
    )


def test_durable_ack_is_on_by_default_with_the_log_under_the_history(tmp_path: Path) -> None:
    s = site(tmp_path)
    assert wal_dir(s) == tmp_path / "hist" / "wal"
    assert wal_dir(s, tmp_path / "other") == tmp_path / "other" / "wal"


def test_durable_ack_off_in_the_site_or_on_the_command_line_keeps_no_log(tmp_path: Path) -> None:
    assert wal_dir(site(tmp_path, durable_ack=False)) is None
    assert wal_dir(site(tmp_path), durable_ack=False) is None
    on = wal_dir(site(tmp_path, durable_ack=False), durable_ack=True)
    assert on == tmp_path / "hist" / "wal"


def test_wal_dir_setting_wins_over_the_default(tmp_path: Path) -> None:
    s = site(tmp_path, wal_dir=str(tmp_path / "fast-disk"))
    assert wal_dir(s) == tmp_path / "fast-disk"


def test_the_source_gets_the_log_and_a_retention_covering_history_and_snapshots(
    tmp_path: Path,
) -> None:
    s = site(tmp_path, snapshot_interval_s=2.0)
    opts = FlowOptions(wal_dir=tmp_path / "wal", flush_interval_s=3.0)
    source = mqtt_source(s, opts)
    assert source.wal_dir == tmp_path / "wal"
    assert source.wal_retention_s == wal_retention_s(s, opts) == 3.0 + 2 * 2.0 + 5.0
    assert source.wal_segment_s == 2.0
