"""``gridflex demo --local-droop``: the site file it writes."""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import replace
from pathlib import Path

from gridflex.config import parse_site
from gridflex.demo import DemoPlan, add_arguments, main, site_toml

PLAN = DemoPlan(3, 2, 15020, 19000, "mqtt://127.0.0.1:18830", dispatch="droop")


def _parse(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(args)


def test_local_droop_flag_is_off_by_default_and_writes_local_droop_true() -> None:
    assert _parse([]).local_droop is False
    assert _parse(["--local-droop"]).local_droop is True
    off = parse_site(tomllib.loads(site_toml(PLAN)), "site.toml")
    on = parse_site(tomllib.loads(site_toml(replace(PLAN, local_droop=True))), "site.toml")
    assert off.dispatch.local_droop is False
    assert (on.dispatch.mode, on.dispatch.local_droop) == ("droop", True)


def test_local_droop_with_fcr_is_refused_before_anything_starts(tmp_path: Path) -> None:
    args = _parse(["--local-droop", "--dispatch", "fcr", "--data-dir", str(tmp_path)])
    assert main(args) == 2
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing started
