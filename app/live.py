"""The Fleet page's live feed: each asset's newest reading and forecast, from the broker.

``gridflex app --site FILE`` gives the app a site file; the app then subscribes (read
only: the ``integrator`` role of ``gridflex broker-config`` is enough) to the site's

* ``gridflex/v1/{site}/+/+/telemetry`` — every asset's readings, and
* ``gridflex/v1/{site}/ev/+/forecast`` — the pipeline's flexibility per asset,

and keeps the newest of each per asset (by ``ts_ms``; an older message that arrives late
replaces nothing). :meth:`LiveFleet.frame` returns the same columns as
:func:`app.data.fleet` builds from the history, so the page draws either the same way. The
history lags by the pipeline's flush interval (seconds); the feed by one poll.

One feed serves every browser session of the Streamlit server (``st.cache_resource`` in
:func:`feed`): one MQTT connection (a clean session, paho on its own thread) per site file.
A payload that does not parse is counted (:attr:`LiveFleet.rejected`) and skipped: the
app only reads, and the pipeline dead-letters the same message with its reason.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

import polars as pl

from gridflex.config import load_site
from gridflex.contract import ContractError, Forecast, Telemetry, parse_payload
from gridflex.contract.base import PREFIX
from gridflex.mqtt import MqttClient

__all__ = ["FLEET_SCHEMA", "LiveFleet", "LiveSource", "source_from_site"]

log = logging.getLogger(__name__)

#: What the feed keeps per asset.
_Latest = TypeVar("_Latest", Telemetry, Forecast)

#: The columns of :func:`app.data.fleet`, with their types.
FLEET_SCHEMA: Final[dict[str, pl.DataType | type[pl.DataType]]] = {
    "site": pl.String,
    "asset": pl.String,
    "kind": pl.String,
    "last_reading": pl.Datetime("us", "UTC"),
    "ts_ms": pl.Int64,
    "power_w": pl.Float64,
    "soc_pct": pl.Float64,
    "setpoint_w": pl.Float64,
    "status": pl.String,
    "device_status": pl.String,
    "v2x": pl.Boolean,
    "max_charge_w": pl.Float64,
    "max_discharge_w": pl.Float64,
    "discharge_energy_wh": pl.Float64,
    "must_charge_w": pl.Float64,
}


@dataclass(frozen=True)
class LiveSource:
    """Where the feed reads: the broker, the credentials, and the site (None: every site)."""

    url: str
    site: str | None
    username: str | None = None
    password: str | None = None


def source_from_site(path: Path) -> LiveSource:
    """The feed's source from a site file (``[mqtt]``, credentials resolved as every process).

    Raises ``gridflex.config.ConfigError`` naming the file and key when it is not valid.
    """
    site = load_site(path)
    return LiveSource(site.mqtt.url, site.id, site.mqtt.username, site.mqtt.password)


class LiveFleet:
    """The newest telemetry and forecast per asset, kept up to date from MQTT.

    ``start`` connects in the background (and keeps reconnecting); :meth:`frame` is safe
    to call from any thread at any time, with no data as an empty frame.
    """

    def __init__(self, source: LiveSource) -> None:
        self.source = source
        self.rejected = 0
        self._lock = threading.Lock()
        self._telemetry: dict[tuple[str, str], Telemetry] = {}
        self._forecasts: dict[tuple[str, str], Forecast] = {}
        self._client = MqttClient(
            source.url,
            f"gridflex-app-{uuid.uuid4().hex[:12]}",
            username=source.username,
            password=source.password,
            clean_session=True,
        )
        site = source.site or "+"
        self._client.subscribe(f"{PREFIX}/{site}/+/+/telemetry", self._on_message, qos=0)
        self._client.subscribe(f"{PREFIX}/{site}/ev/+/forecast", self._on_message, qos=0)

    def start(self) -> None:
        """Connect in the background."""
        self._client.start()

    def stop(self) -> None:
        """Disconnect."""
        self._client.stop(flush_timeout_s=0.0)

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """True once connected, False after ``timeout_s``."""
        return self._client.wait_connected(timeout_s)

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        return self._client.connected

    def on_payload(self, payload: bytes) -> None:
        """Keep ``payload`` if it is an asset's newest telemetry or forecast."""
        try:
            message = parse_payload(payload)
        except ContractError as exc:
            self.rejected += 1
            log.debug("live feed skips a payload: %s", exc)
            return
        if isinstance(message, Telemetry):
            self._keep(self._telemetry, message)
        elif isinstance(message, Forecast):
            self._keep(self._forecasts, message)

    def _on_message(self, _topic: str, payload: bytes) -> None:
        self.on_payload(payload)

    def _keep(self, table: dict[tuple[str, str], _Latest], message: _Latest) -> None:
        key = (message.site, message.asset)
        with self._lock:
            held = table.get(key)
            if held is None or message.ts_ms >= held.ts_ms:
                table[key] = message

    def frame(self) -> pl.DataFrame:
        """One row per asset with a reading: :data:`FLEET_SCHEMA`, sorted by site and asset."""
        with self._lock:
            readings = sorted(self._telemetry.items())
            forecasts = dict(self._forecasts)
        rows = []
        for key, t in readings:
            f = forecasts.get(key)
            car_v2x = t.ev.v2x if t.ev is not None else None
            rows.append(
                {
                    "site": t.site,
                    "asset": t.asset,
                    "kind": t.kind,
                    "last_reading": datetime.fromtimestamp(t.ts_ms / 1000, UTC),
                    "ts_ms": t.ts_ms,
                    "power_w": t.power_w,
                    "soc_pct": t.soc_pct,
                    "setpoint_w": t.setpoint_w,
                    "status": t.status,
                    "device_status": t.device_status,
                    "v2x": f.v2x if f is not None else car_v2x,
                    "max_charge_w": None if f is None else f.max_charge_w,
                    "max_discharge_w": None if f is None else f.max_discharge_w,
                    "discharge_energy_wh": None if f is None else f.discharge_energy_wh,
                    "must_charge_w": None if f is None else f.must_charge_w,
                }
            )
        return pl.DataFrame(rows, schema=FLEET_SCHEMA)
