"""``gridflex demo --sites 3``: three bridged site brokers, a central, one history."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gridflex.broker import find_mosquitto
from gridflex.history import connect

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="needs mosquitto"),
]

FLEET_FCR_W = 15_000.0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sites")
    profile = tmp / "low.csv"
    profile.write_text("t_s,freq_hz\n0,49.80\n")  # full FCR activation all along
    data = tmp / "data"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gridflex.cli",
            "demo",
            "--sites",
            "3",
            "--inverters",
            "2",
            "--chargers",
            "0",
            "--duration",
            "30",
            "--no-ui",
            "--fcr-capacity-w",
            str(FLEET_FCR_W),
            "--frequency-profile",
            str(profile),
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return data


def test_every_site_runs_its_own_pipeline_with_a_zero_capacity_of_its_own(
    data_dir: Path,
) -> None:
    sites = tomllib.loads((data_dir / "central.toml").read_text())["central"]["sites"]
    assert sites == ["site-a", "site-b", "site-c"]
    for site in sites:
        doc = tomllib.loads((data_dir / "sites" / site / "site.toml").read_text())
        assert doc["dispatch"]["mode"] == "fcr"
        assert doc["dispatch"]["fcr"]["capacity_w"] == 0.0  # all it holds comes from central


def test_one_query_sees_every_site_and_the_responses_sum_to_the_central_target(
    data_dir: Path,
) -> None:
    con = connect(data_dir)
    # Each asset's last command, as a deviation from its base: per site the share the
    # central gave it, over all sites the fleet capacity (full activation at 49.80 Hz).
    rows = con.execute(
        "select site, sum(setpoint_w - base_w) from ("
        "  select site, asset, arg_max(setpoint_w, ts_ms) as setpoint_w,"
        "         arg_max(base_setpoint_w, ts_ms) as base_w"
        "  from commands group by site, asset) group by site order by site"
    ).fetchall()
    assert [r[0] for r in rows] == ["site-a", "site-b", "site-c"]
    assert abs(sum(r[1] for r in rows) + FLEET_FCR_W) < 3.0, rows
    for _site, response_w in rows:  # identical sites: identical flexibility, equal shares
        assert abs(response_w + FLEET_FCR_W / 3) < 1.0, rows


def test_the_sites_deliver_the_fleet_response_measured_at_the_inverters(data_dir: Path) -> None:
    con = connect(data_dir)
    rows = con.execute(
        "select site, sum(p) from (select site, asset, avg(power_w) as p from telemetry "
        "where ts_ms > (select max(ts_ms) - 2000 from telemetry) group by site, asset) "
        "group by site order by site"
    ).fetchall()
    assert len(rows) == 3
    assert abs(sum(r[1] for r in rows) + FLEET_FCR_W) < 30.0, rows
