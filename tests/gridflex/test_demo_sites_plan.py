"""``gridflex demo --sites N``: its arguments and the files it writes (no processes)."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest

from gridflex.central import parse_central
from gridflex.config import parse_site
from gridflex.demo import DemoPlan, add_arguments, main
from gridflex.demo.sites import MultiSitePlan, central_toml, site_ids, sites_site_toml


def _parse(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(args)


def test_sites_default_to_one_and_more_than_26_are_refused() -> None:
    assert _parse([]).sites == 1
    assert _parse(["--sites", "3"]).sites == 3
    with pytest.raises(SystemExit):
        _parse(["--sites", "27"])


def test_several_sites_on_an_existing_broker_are_refused(tmp_path: Path) -> None:
    args = _parse(["--sites", "2", "--mqtt-url", "mqtt://127.0.0.1:1883"])
    args.data_dir = tmp_path
    assert main(args) == 2


def test_the_fleet_capacity_defaults_to_half_the_fleet_discharge_rating(tmp_path: Path) -> None:
    plan = MultiSitePlan(_parse(["--sites", "3", "--inverters", "2", "--chargers", "1"]), tmp_path)
    assert plan.sites == site_ids(3) == ["site-a", "site-b", "site-c"]
    assert plan.fcr_capacity_w == 3 * (2 * 10_000 + 11_000) / 2


def test_each_site_file_names_its_site_and_keeps_its_state_in_its_folder(tmp_path: Path) -> None:
    site_dir = tmp_path / "sites" / "site-b"
    plan = DemoPlan(
        2,
        0,
        15020,
        19000,
        "mqtt://127.0.0.1:1883",
        dispatch="fcr",
        fcr_capacity_w=0.0,
        site_id="site-b",
        history_dir=str(tmp_path),
    )
    site = parse_site(tomllib.loads(sites_site_toml(plan, site_dir)), "site.toml")
    assert site.id == "site-b"
    assert site.history.dir == tmp_path
    assert site.pipeline.recovery_dir == site_dir / "recovery"
    assert site.pipeline.wal_dir == site_dir / "wal"
    assert site.dispatch.fcr.capacity_w == 0.0


def test_the_central_file_parses_and_lists_the_sites(tmp_path: Path) -> None:
    text = central_toml(site_ids(3), "mqtt://127.0.0.1:1999", 15_000, tmp_path / "c.toml")
    config = parse_central(tomllib.loads(text))
    assert config.central.sites == ["site-a", "site-b", "site-c"]
    assert config.service.fcr_capacity_w == 15_000
    assert config.mqtt.credentials == tmp_path / "c.toml"
