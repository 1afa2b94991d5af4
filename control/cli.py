"""``gridflex control``: apply dispatch commands to the devices (SunSpec 704).

Runs :class:`control.service.ControlService` until SIGINT or SIGTERM; exit code 0 after a
clean stop, 2 when the site has no assets to control.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from control.faults import FaultLatch
from control.ledger import Ledger
from control.modbus_client import CONTROL_MODBUS_CLIENTS
from control.service import ControlService, default_ledger_path
from gridflex.config import load_site
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.runtime import stop_on_signals

__all__ = ["add_arguments", "main"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gridflex control``."""
    parser.add_argument("--site", type=Path, required=True, help="site file (TOML)")
    parser.add_argument(
        "--ledger",
        type=Path,
        default=None,
        help="the idempotency ledger (SQLite); default {history.dir}/control/ledger.sqlite3",
    )
    parser.add_argument(
        "--watchdog-s",
        type=float,
        default=None,
        help="an asset without a command for this long goes back to its default setpoint "
        "(default: [control] watchdog_s, else the devices' reversion time, "
        "max(2 x dispatch.refresh_s, 10) s)",
    )

    parser.add_argument(
        "--modbus-client",
        choices=CONTROL_MODBUS_CLIENTS,
        default="lean",
        help="Modbus TCP client for the SunSpec writes (default lean; pymodbus selectable)",
    )


def main(args: argparse.Namespace) -> int:
    """Run ``gridflex control`` until SIGINT/SIGTERM; 0 after a clean stop."""
    site = load_site(args.site)
    if not site.assets:
        log.error("%s has no assets to control", site.source or args.site)
        return 2
    ledger_path: Path = args.ledger or default_ledger_path(site)
    ledger_path.parent.mkdir(parents=True, exist_ok=True)

    async def _run(ledger: Ledger, faults: FaultLatch) -> None:
        stop = stop_on_signals()
        mqtt = AsyncMqttClient(
            site.mqtt.url,
            f"gridflex-control-{site.id}",
            username=site.mqtt.username,
            password=site.mqtt.password,
            clean_session=False,
            queue_limit=site.mqtt.queue_limit,
            keepalive_s=site.mqtt.keepalive_s,
        )
        service = ControlService(
            site,
            ledger,
            mqtt,
            faults=faults,
            watchdog_s=args.watchdog_s,
            modbus_client=args.modbus_client,
        )
        await mqtt.start()
        if not await mqtt.wait_connected(10.0):
            log.warning(
                "MQTT broker %s not reachable yet; commands wait until it is", site.mqtt.url
            )
        try:
            await service.run(stop)
        finally:
            await mqtt.stop(flush_timeout_s=5.0)
        log.info("control stopped: %d acks, %d dead letters", service.acks, service.dead_letters)

    log.info("control: ledger %s", ledger_path)
    with Ledger(ledger_path) as ledger, FaultLatch(ledger_path) as faults:
        asyncio.run(_run(ledger, faults))
    return 0
