"""``gridflex sim chargers``: options, the fleet they describe, and the run until a signal."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import ssl
from pathlib import Path
from typing import Any

from gridflex.runtime import stop_on_signals
from simulators.charger.fleet import Faults, StationSpec, build_fleet, fleet_from_site
from simulators.charger.station import SimStation, run_fleet
from simulators.grid_frequency import FrequencyProfile, FrequencySource, ProfileError

__all__ = ["add_arguments", "main"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gridflex sim chargers``."""
    parser.add_argument("--count", type=int, help="number of stations (default: all in --site)")
    parser.add_argument(
        "--csms-url", required=True, help="CSMS base URL, e.g. ws://127.0.0.1:9000/ocpp"
    )
    parser.add_argument("--ocpp", choices=("2.0.1", "2.1", "mix"), default="mix")
    parser.add_argument("--v21-fraction", type=float, default=0.5, help="with --ocpp mix")
    parser.add_argument("--v2x-fraction", type=float, default=0.5, help="V2X-capable cars")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--site", type=Path, help="take station ids/passwords from this site")
    parser.add_argument("--id-prefix", default="sim-cs", help="station ids without --site")
    parser.add_argument("--password", help="HTTP Basic password of every station (no --site)")
    parser.add_argument("--ca-file", type=Path, help="CA certificate to verify a wss:// CSMS")
    parser.add_argument("--arrival-window-s", type=float, default=0.0)
    parser.add_argument("--stay-s", type=float, help="mean stay of a car (default: forever)")
    parser.add_argument("--ramp-s", type=float, default=0.0, help="spread the connects")
    parser.add_argument("--overtemp", action="store_true", help="inject connector overheating")
    parser.add_argument("--ground-fault-after-s", type=float, help="inject a ground fault")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="lose meter values")
    parser.add_argument("--hang-after-s", type=float, help="stop answering the CSMS")
    parser.add_argument("--faulty", type=int, help="faults only on the first N stations")
    parser.add_argument(
        "--evses-per-station",
        type=int,
        default=1,
        help="EVSEs per station, each with its own car (without --site; default 1)",
    )
    parser.add_argument(
        "--frequency-profile",
        type=Path,
        default=None,
        help="CSV t_s,freq_hz the stations measure (LocalFrequency profiles follow it); "
        "default: nominal",
    )
    parser.add_argument("--nominal-hz", type=float, default=50.0, help="nominal grid frequency")


def _specs_from_args(args: argparse.Namespace) -> list[StationSpec]:
    faults = Faults(
        overtemp=args.overtemp,
        ground_fault_after_s=args.ground_fault_after_s,
        drop_rate=args.drop_rate,
        hang_after_s=args.hang_after_s,
    )
    common: dict[str, Any] = {
        "seed": args.seed,
        "ocpp": args.ocpp,
        "v21_fraction": args.v21_fraction,
        "v2x_fraction": args.v2x_fraction,
        "arrival_window_s": args.arrival_window_s,
        "stay_s": args.stay_s,
        "faults": faults,
        "faulty": args.faulty,
    }
    if args.site is not None:
        return fleet_from_site(args.site, count=args.count, **common)
    if args.count is None:
        raise SystemExit("gridflex sim chargers: give --count (or --site)")
    return build_fleet(
        args.count,
        id_prefix=args.id_prefix,
        password=args.password,
        evses_per_station=args.evses_per_station,
        **common,
    )


_FREEZE_AFTER_RAMP_S = 15.0


def main(args: argparse.Namespace) -> int:
    """Run the simulated stations until SIGINT/SIGTERM; exit 0.

    What start-up built, and later the stations' connections, are frozen out of the garbage
    collector's way (``gc.freeze``): a full collection walks every station's objects and
    pauses the process, and the stations due meanwhile then send together, in one burst.
    """
    specs = _specs_from_args(args)
    frequency: FrequencySource | None = None
    if args.frequency_profile is not None:
        try:
            frequency = FrequencyProfile.from_csv(args.frequency_profile)
        except ProfileError as exc:
            log.error("frequency profile: %s", exc)
            return 2
    ssl_context = None
    if args.csms_url.startswith("wss://"):
        ssl_context = ssl.create_default_context(cafile=args.ca_file)
    n21 = sum(s.ocpp_version == "2.1" for s in specs)
    n_evses = sum(len(s.evses) for s in specs)
    n_v2x = sum(e.car.v2x for s in specs for e in s.evses)
    log.info(
        "%d simulated stations (%d OCPP 2.1), %d EVSEs, %d V2X cars -> %s",
        len(specs),
        n21,
        n_evses,
        n_v2x,
        args.csms_url,
    )

    async def _main() -> list[SimStation]:
        stop = stop_on_signals()
        loop = asyncio.get_running_loop()
        gc.freeze()
        freezer = loop.call_later(args.ramp_s + _FREEZE_AFTER_RAMP_S, gc.freeze)
        try:
            return await run_fleet(
                specs,
                args.csms_url,
                stop,
                ssl_context=ssl_context,
                ramp_s=args.ramp_s,
                frequency=frequency,
                nominal_hz=args.nominal_hz,
            )
        finally:
            freezer.cancel()

    stations = asyncio.run(_main())
    sent = sum(s.counters.messages_sent for s in stations)
    dropped = sum(s.counters.messages_dropped for s in stations)
    log.info("simulated stations stopped: %d messages sent, %d dropped", sent, dropped)
    return 0
