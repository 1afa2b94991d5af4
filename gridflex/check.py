"""``gridflex check --site FILE``: validate a site file and print what it describes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gridflex.config import load_site

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gridflex check``."""
    parser.add_argument("--site", type=Path, required=True, help="site file (TOML)")


def main(args: argparse.Namespace) -> int:
    """Load the site (a ConfigError exits 2 via the CLI) and print a one-screen summary."""
    site = load_site(args.site)
    out = sys.stdout
    out.write(
        f"site {site.id}: {len(site.inverters)} inverter(s), {len(site.evses)} evse(s), "
        f"{site.nominal_frequency_hz} Hz nominal\n"
    )
    out.write(f"  mqtt    {site.mqtt.url}\n  history {site.history.dir}\n")
    d = site.dispatch
    detail = {
        "off": "",
        "droop": f" (db {d.droop.db_uf_hz}/{d.droop.db_of_hz} Hz, k {d.droop.k_uf}/{d.droop.k_of})",
        "fcr": f" ({d.fcr.capacity_w:.0f} W, full at {d.fcr.full_at_hz} Hz)",
    }[d.mode]
    out.write(f"  dispatch {d.mode}{detail}\n")
    for asset in site.assets:
        where = (
            f"{asset.host}:{asset.port} unit {asset.unit_id}"
            if asset.kind == "inverter"
            else f"station {asset.station}"
        )
        out.write(
            f"  {asset.kind:8} {asset.id:16} {where}  +{asset.max_charge_w:.0f} W / "
            f"-{asset.max_discharge_w:.0f} W  "
            f"SoC {asset.soc_min_pct:.0f}-{asset.soc_max_pct:.0f} %\n"
        )
    return 0
