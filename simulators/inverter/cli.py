"""``gridflex sim inverters``: options and the serving loop."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from gridflex.net import raise_open_file_limit
from gridflex.runtime import stop_on_signals
from simulators.grid_frequency import (
    FrequencyProfile,
    FrequencySource,
    ProfileError,
    StochasticFrequency,
)
from simulators.inverter.model import InverterRatings
from simulators.inverter.server import InverterFleet

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gridflex sim inverters``."""
    parser.add_argument("--count", type=int, default=1, help="number of inverters (default 1)")
    parser.add_argument("--base-port", type=int, default=5020, help="port of device 0")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--frequency-profile", type=Path, default=None, help="CSV t_s,freq_hz to replay"
    )
    parser.add_argument("--nominal-hz", type=float, default=50.0, help="50 or 60")
    parser.add_argument("--seed", type=int, default=None, help="seed for repeatable runs")
    parser.add_argument("--update-hz", type=float, default=10.0, help="physics update rate")
    parser.add_argument("--max-power-w", type=float, default=11_000.0, help="charge/discharge")
    parser.add_argument("--capacity-wh", type=float, default=60_000.0, help="battery capacity")
    parser.add_argument("--ramp-w-per-s", type=float, default=5_000.0, help="power ramp limit")
    parser.add_argument(
        "--ground-fault-after-s",
        type=float,
        default=None,
        help="trip device 0 with a ground fault (InvSt FAULT, Alrm GROUND_FAULT) after S s",
    )


async def _serve(args: argparse.Namespace, frequency: FrequencySource) -> None:
    ratings = InverterRatings(
        max_charge_w=args.max_power_w,
        max_discharge_w=args.max_power_w,
        capacity_wh=args.capacity_wh,
        ramp_w_per_s=args.ramp_w_per_s,
        nominal_hz=args.nominal_hz,
    )
    stop = stop_on_signals()
    fleet = InverterFleet(
        args.count,
        args.base_port,
        host=args.host,
        frequency=frequency,
        ratings=ratings,
        seed=args.seed,
        update_hz=args.update_hz,
    )
    async with fleet:
        log.info(
            "serving %d SunSpec inverters on %s:%d-%d",
            args.count,
            args.host,
            args.base_port,
            args.base_port + args.count - 1,
        )
        if args.ground_fault_after_s is not None:
            try:
                await asyncio.wait_for(stop.wait(), args.ground_fault_after_s)
            except TimeoutError:
                fleet.set_ground_fault(0, True)
                log.warning("device 0: ground fault (InvSt FAULT, Alrm GROUND_FAULT)")
        await stop.wait()
    log.info("inverter simulator stopped")


def main(args: argparse.Namespace) -> int:
    """Run ``gridflex sim inverters`` until SIGINT/SIGTERM; returns 0 after a clean stop."""
    if args.count < 1 or not 1 <= args.base_port <= 65536 - args.count:
        log.error("--count must be >= 1 and ports base-port..base-port+count-1 valid")
        return 2
    frequency: FrequencySource
    if args.frequency_profile is not None:
        try:
            frequency = FrequencyProfile.from_csv(args.frequency_profile)
        except ProfileError as exc:
            log.error("frequency profile: %s", exc)
            return 2
    else:
        frequency = StochasticFrequency(nominal_hz=args.nominal_hz, seed=args.seed)
    raise_open_file_limit()
    asyncio.run(_serve(args, frequency))
    return 0
