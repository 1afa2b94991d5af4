"""``gridflex control``: apply dispatch commands to the devices (SunSpec 704), serve the API.

``gridflex control --site FILE`` runs :class:`control.service.ControlService` until SIGINT
or SIGTERM, and beside it on the same event loop the REST API (:mod:`control.api`) when the
site file has an ``[api]`` table (``--api-listen HOST:PORT`` serves it without one,
``--no-api`` never). The API needs a bearer token: ``[api] token`` or
``GRIDFLEX_API_TOKEN``; without one the command refuses to start, naming the file and key.
Exit code 0 after a clean stop, 2 when the site has no assets to control or the API cannot
be served.

``gridflex control clear-fault ASSET --site FILE`` asks the running ``gridflex control``
(through its API, with the site file's listen address and token) to clear the asset's
latched faults and prints those cleared; exit code 1 when the API is unreachable or
refuses.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from control import metrics as control_metrics
from control.api import ApiClientError, ApiServer, ControlApi, clear_fault, create_app, serve_api
from control.faults import FaultLatch
from control.ledger import Ledger
from control.modbus_client import OpenRegisterClient, open_client
from control.operator import Operator
from control.profiles import PROFILES_FILE, ProfileStore
from control.service import ControlService, default_ledger_path
from gridflex import events, systemd
from gridflex.config import (
    ApiConfig,
    ConfigError,
    SiteConfig,
    load_site,
    resolve_api_token,
    split_listen,
)
from gridflex.metrics import add_metrics_argument, listen_address, serve_metrics
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.runtime import stop_on_signals

__all__ = ["add_arguments", "api_config_of", "main"]

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gridflex control`` and its ``clear-fault`` action."""
    parser.add_argument("--site", type=Path, default=None, help="site file (TOML); required")
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
        "--api-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve the REST API here (overrides [api] listen; serves it even without [api])",
    )
    parser.add_argument(
        "--no-api", action="store_true", help="do not serve the REST API, whatever [api] says"
    )
    add_metrics_argument(parser)
    actions = parser.add_subparsers(dest="control_action", metavar="ACTION")
    clear = actions.add_parser(
        "clear-fault",
        help="clear an asset's latched faults through the running API",
        description="Ask the running `gridflex control` (its REST API) to clear the latched "
        "faults of ASSET; prints the faults cleared.",
    )
    clear.add_argument("asset", metavar="ASSET", help="asset id")
    clear.add_argument("--site", type=Path, default=argparse.SUPPRESS, help="site file (TOML)")
    clear.add_argument(
        "--api-listen",
        default=argparse.SUPPRESS,
        metavar="HOST:PORT",
        help="where the API listens (default: [api] listen of the site file)",
    )


def api_config_of(
    site: SiteConfig, *, api_listen: str | None = None, no_api: bool = False
) -> ApiConfig | None:
    """The API to serve for ``site`` and the command-line options; None = no API."""
    if no_api:
        return None
    api = site.api
    if api_listen is not None:
        try:
            split_listen(api_listen)
        except ValueError as exc:
            raise ConfigError(f"config error in command line: --api-listen: {exc}") from None
        api = (api or ApiConfig()).model_copy(update={"listen": api_listen, "enabled": True})
    if api is None or not api.enabled:
        return None
    return api


def main(args: argparse.Namespace, *, open_modbus: OpenRegisterClient = open_client) -> int:
    """Run ``gridflex control`` (or its ``clear-fault`` action); the exit code.

    ``open_modbus`` opens the SunSpec writes' connections: the lean client; the seam
    through which the benchmarks' baseline (``bench/baselines.py``) plugs pymodbus in.
    """
    if args.site is None:
        log.error("gridflex control: --site FILE is required")
        return 2
    if getattr(args, "control_action", None) == "clear-fault":
        return _clear_fault(args)
    site = load_site(args.site)
    if not site.assets:
        log.error("%s has no assets to control", site.source or args.site)
        return 2
    api = api_config_of(site, api_listen=args.api_listen, no_api=args.no_api)
    token = resolve_api_token(api, site.source or args.site) if api is not None else None
    ledger_path: Path = args.ledger or default_ledger_path(site)
    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    profiles_path = ledger_path.parent / PROFILES_FILE  # beside the ledger
    metrics_listen = listen_address(site, "control", args.metrics_listen)

    async def _run(ledger: Ledger, faults: FaultLatch, profiles: ProfileStore) -> int:
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
        events.configure(mqtt, site.id, "control")  # faults on MQTT, into the history
        service = ControlService(
            site,
            ledger,
            mqtt,
            faults=faults,
            profiles=profiles,
            watchdog_s=args.watchdog_s,
            open_modbus=open_modbus,
        )
        metrics = serve_metrics(
            metrics_listen, "control", lambda: control_metrics.families(service)
        )
        server: ApiServer | None = None
        if api is not None and token is not None:
            try:
                server = await _start_api(Operator(service), profiles, api, token, args.api_listen)
            except OSError as exc:
                log.error("cannot serve the API on %s: %s", args.api_listen or api.listen, exc)
                return 2
        await mqtt.start()
        if not await mqtt.wait_connected(10.0):
            log.warning(
                "MQTT broker %s not reachable yet; commands wait until it is", site.mqtt.url
            )

        async def _subscribed() -> None:  # service.run subscribes before its first await
            while not await mqtt.wait_subscribed(5.0):
                pass

        try:
            async with systemd.supervised(
                connected=systemd.broker_up(mqtt),
                ready_when=_subscribed,
                ready_text="control: subscribed" + ("" if server is None else ", API up"),
            ):
                await service.run(stop)
        finally:
            if server is not None:
                await server.stop()
            await mqtt.stop(flush_timeout_s=5.0)
            if metrics is not None:
                metrics.close()
        log.info("control stopped: %d acks, %d dead letters", service.acks, service.dead_letters)
        return 0

    log.info("control: ledger %s, charge profiles %s", ledger_path, profiles_path)
    with (
        Ledger(ledger_path) as ledger,
        FaultLatch(ledger_path) as faults,
        ProfileStore(profiles_path) as profiles,
    ):
        return asyncio.run(_run(ledger, faults, profiles))


async def _start_api(
    service: ControlApi,
    profiles: ProfileStore,
    api: ApiConfig,
    token: str,
    api_listen: str | None,
) -> ApiServer:
    """Serve the API over ``service`` (raises ``OSError`` when it cannot)."""
    server = serve_api(create_app(service, profiles, token), api, listen=api_listen)
    if not await server.wait_started():
        await server.stop()
        raise OSError(f"the API server on {server.url} did not start")
    log.info("API: %s/api/v1 (bearer token from %s)", server.url, _token_origin(api))
    return server


def _token_origin(api: ApiConfig) -> str:
    return "[api] token" if api.token is not None else "GRIDFLEX_API_TOKEN"


def _clear_fault(args: argparse.Namespace) -> int:
    site = load_site(args.site)
    api = api_config_of(site, api_listen=getattr(args, "api_listen", None))
    if api is None:
        raise ConfigError(
            f"config error in {site.source or args.site}: api: expected an [api] table "
            "(listen, token) to reach the running gridflex control"
        )
    token = resolve_api_token(api, site.source or args.site)
    try:
        cleared = clear_fault(api, token, args.asset)
    except ApiClientError as exc:
        sys.stderr.write(f"gridflex: {exc}\n")
        return 1
    if cleared:
        sys.stdout.write(f"{args.asset}: cleared {', '.join(cleared)}\n")
    else:
        sys.stdout.write(f"{args.asset}: no latched fault\n")
    return 0
