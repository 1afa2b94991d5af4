"""``gridflex demo``: the whole system on one machine with simulated assets.

It starts a broker (Mosquitto on a free loopback port when installed, else the embedded
amqtt broker; ``--mqtt-url`` uses an existing one), writes the site file it runs into the
data directory (``site.toml``), then starts each part as its own process, exactly as an
operator would. Its own Mosquitto refuses anonymous clients: ``DATA/broker/`` holds the
configuration of ``gridflex broker-config`` with a generated password per role, and each
part gets its role's credentials file through ``GRIDFLEX_MQTT_CREDENTIALS`` (the site file
holds no MQTT secret)::

    gridflex sim inverters  --count N --base-port P
    gridflex sim chargers   --count M --csms-url ws://127.0.0.1:Q/ocpp
    gridflex collect modbus --site DATA/site.toml
    gridflex collect ocpp   --site DATA/site.toml
    gridflex pipeline       --site DATA/site.toml
    gridflex control        --site DATA/site.toml

and shows a live terminal view of the MQTT topics: per asset its last reading and the last
dispatch command, and the pipeline's site summary. ``--dispatch off|droop|fcr`` chooses the
``[dispatch]`` mode written into the site file. The site file also gets an ``[api]`` table
(a free loopback port and a fresh token from ``secrets.token_urlsafe``): ``gridflex
control`` serves its REST API there, and the view's banner shows the URL and the token.
Beside the live system it starts the analytics app (``gridflex app`` on a free loopback
port, over the same history) and prints its URL; ``--no-app`` or ``--no-ui`` leave it out.

Each run starts with a fresh history: what an earlier run wrote into the data directory (the
history streams, the pipeline's recovery state and write-ahead log, the control ledger, ``logs/``,
``site.toml``) is removed first, nothing else; ``--keep-history`` keeps it. Ctrl-C or
``--duration`` stops the parts in :func:`stop_order`: the setpoint writer first (the
simulated inverters then revert on their own 704 timers), the producers next (simulators,
then collectors), so their last readings
still reach the pipeline, then the pipeline (it flushes the history), then the broker. Each
part's log is in ``DATA/logs/``; each part can be rerun on its own against ``DATA/site.toml``.

The package, by concern: :mod:`~gridflex.demo.plan` (what runs and the site file written),
:mod:`~gridflex.demo.parts` (the processes, started and stopped in order),
:mod:`~gridflex.demo.view` (the live view and banners), :mod:`~gridflex.demo.cli` (the
command's arguments and :func:`main`) and :mod:`~gridflex.demo.sites` (``--sites N``).
"""

from __future__ import annotations

from gridflex.demo.cli import add_arguments, main, runs_app
from gridflex.demo.parts import Part, plan_parts, stop_order
from gridflex.demo.plan import (
    DEMO_DIRS,
    DEMO_FILES,
    EVSE_RATING_W,
    INVERTER_RATING_W,
    PIPELINE_CLIENT_ID,
    SITE_ID,
    DemoPlan,
    clear_history,
    site_toml,
)
from gridflex.demo.view import LiveView, api_banner, app_banner

__all__ = [
    "DEMO_DIRS",
    "DEMO_FILES",
    "EVSE_RATING_W",
    "INVERTER_RATING_W",
    "PIPELINE_CLIENT_ID",
    "SITE_ID",
    "DemoPlan",
    "LiveView",
    "Part",
    "add_arguments",
    "api_banner",
    "app_banner",
    "clear_history",
    "main",
    "plan_parts",
    "runs_app",
    "site_toml",
    "stop_order",
]
