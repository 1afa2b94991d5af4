"""Site configuration: one TOML file describes one site and its assets.

The file is read and validated once at start-up into frozen, typed objects. Any error names
the file, the key and what was expected, for example::

    config error in site.toml: assets[2].max_charge_w: expected a number >= 0, got -5

See ``examples/site.toml`` for a complete, commented example.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gridflex.contract import ASSET_ID_PATTERN

__all__ = [
    "API_TOKEN_ENV",
    "ApiConfig",
    "ConfigError",
    "ControlConfig",
    "DispatchConfig",
    "DroopConfig",
    "DroopOverride",
    "EvDefaults",
    "EvseAsset",
    "FcrConfig",
    "HistoryConfig",
    "InverterAsset",
    "ModbusConfig",
    "MqttConfig",
    "OcppConfig",
    "PipelineConfig",
    "SiteConfig",
    "load_site",
    "parse_site",
    "resolve_api_token",
    "split_listen",
]

_AssetId = Annotated[str, Field(pattern=ASSET_ID_PATTERN)]
_NonNegW = Annotated[float, Field(ge=0)]
_Pct = Annotated[float, Field(ge=0, le=100)]


class ConfigError(ValueError):
    """A site file that cannot be used; the message names file, key and expectation."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttConfig(_Section):
    """Broker connection."""

    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = None
    queue_limit: Annotated[int, Field(ge=1)] = 100_000
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30

    @field_validator("url")
    @classmethod
    def _url_is_mqtt(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("expected mqtt://host[:port] or mqtts://host[:port]")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("expected a port number in the URL") from None
        return value


class HistoryConfig(_Section):
    """Where the Parquet history lives."""

    dir: Path = Path("data")


class ModbusConfig(_Section):
    """SunSpec Modbus TCP polling."""

    poll_interval_ms: Annotated[int, Field(ge=50, le=60_000)] = 200
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.0
    backoff_initial_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @model_validator(mode="after")
    def _backoff_order(self) -> ModbusConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        return self


class PipelineConfig(_Section):
    """Stream analytics."""

    window_ms: Annotated[int, Field(ge=100, le=3_600_000)] = 1000
    allowed_lateness_ms: Annotated[int, Field(ge=0, le=60_000)] = 500
    recovery: bool = True
    recovery_dir: Path | None = Field(
        default=None, description="Bytewax recovery database; default {history.dir}/recovery"
    )
    snapshot_interval_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    durable_ack: bool = Field(
        default=True,
        description="PUBACK telemetry and acks only once in the write-ahead log (fsynced)",
    )
    wal_dir: Path | None = Field(
        default=None, description="Write-ahead log of received messages; default {history.dir}/wal"
    )


_ResponseTimeS = Annotated[float, Field(ge=0.2, le=10.0)]


class DroopConfig(_Section):
    """IEEE 1547-2018 frequency-droop parameters (defaults: the standard's category defaults).

    ``db_*_hz`` are the dead bands below (under-frequency) and above (over-frequency)
    nominal; ``k_*`` the per-unit droop (0.05: full rated power at 5 % off nominal);
    ``response_time_s`` the open-loop response time (90 % of a step; 5 s default, 0.2 to
    10 s settable, IEEE 1547-2018 Table 24), programmed into devices that droop on their own
    (``[dispatch] local_droop``).
    """

    db_of_hz: Annotated[float, Field(ge=0.017, le=1.0)] = 0.036
    db_uf_hz: Annotated[float, Field(ge=0.017, le=1.0)] = 0.036
    k_of: Annotated[float, Field(ge=0.01, le=0.1)] = 0.05
    k_uf: Annotated[float, Field(ge=0.01, le=0.1)] = 0.05
    response_time_s: _ResponseTimeS = 5.0


class DroopOverride(_Section):
    """Per-asset droop parameters; what is not given comes from ``[dispatch.droop]``."""

    db_of_hz: Annotated[float, Field(ge=0.017, le=1.0)] | None = None
    db_uf_hz: Annotated[float, Field(ge=0.017, le=1.0)] | None = None
    k_of: Annotated[float, Field(ge=0.01, le=0.1)] | None = None
    k_uf: Annotated[float, Field(ge=0.01, le=0.1)] | None = None
    response_time_s: _ResponseTimeS | None = None


class FcrConfig(_Section):
    """Fleet frequency response (FCR): a symmetric capacity, full at ``full_at_hz`` off nominal."""

    capacity_w: _NonNegW = 0.0
    deadband_hz: Annotated[float, Field(ge=0, le=0.5)] = 0.010
    full_at_hz: Annotated[float, Field(gt=0, le=2.0)] = 0.200

    @model_validator(mode="after")
    def _order(self) -> FcrConfig:
        if self.full_at_hz <= self.deadband_hz:
            raise ValueError("full_at_hz must be above deadband_hz")
        return self


class EvDefaults(_Section):
    """Charging needs assumed for a car that states none, and the battery model's constants."""

    capacity_wh: Annotated[float, Field(gt=0)] = 60_000.0
    target_soc_pct: _Pct = 80.0
    dwell_h: Annotated[float, Field(gt=0, le=168)] = 8.0
    efficiency: Annotated[float, Field(gt=0, le=1)] = 0.92
    taper_soc_pct: _Pct = 80.0


class DispatchConfig(_Section):
    """Dispatch in stream: droop per asset or a fleet frequency response (FCR).

    ``min_step_w``: a new command only when the setpoint moves by at least this much;
    ``refresh_s``: a keep-alive command at least this often (shorter than the devices'
    reversion time); ``valid_s``: how long a command stays valid after it is issued.
    ``local_droop``: the control writer programs the droop curve into each device (SunSpec
    711, OCPP 2.1 ``LocalFrequency``) and the device responds on its own measurement; the
    pipeline's droop commands then carry the base setpoint only. It stacks on nothing but
    ``mode = "droop"`` (or ``"off"``): with ``"fcr"`` it would add a second response.
    """

    mode: Literal["off", "droop", "fcr"] = "off"
    local_droop: bool = False
    droop: DroopConfig = DroopConfig()
    fcr: FcrConfig = FcrConfig()
    ev_defaults: EvDefaults = EvDefaults()
    min_step_w: _NonNegW = 100.0
    refresh_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    valid_s: Annotated[float, Field(gt=0, le=3600)] = 15.0
    freq_max_age_ms: Annotated[int, Field(ge=100, le=60_000)] = 1000
    summary_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    forecast_interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0

    @model_validator(mode="after")
    def _refresh_within_validity(self) -> DispatchConfig:
        if self.valid_s <= self.refresh_s:
            raise ValueError("valid_s must be longer than refresh_s")
        if self.local_droop and self.mode == "fcr":
            raise ValueError(
                'local_droop = true needs mode = "droop" or "off": the devices\' own droop '
                "would add to the fcr response"
            )
        return self


class ControlConfig(_Section):
    """The control writer (``gridflex control``).

    ``watchdog_s``: an asset without a command for this long goes back to its
    ``default_setpoint_w`` (None: the devices' reversion time, ``max(2 x
    dispatch.refresh_s, 10)`` s). ``lost_after_failures``: a device the collector failed to
    reach this many times in a row is a lost device, a fault latched until cleared.
    ``queue_limit``: commands waiting per asset; beyond it the oldest is dropped and acked
    ``stale`` (a newer absolute setpoint supersedes it). ``telemetry_max_age_s``: readings
    older than this do not count for the SoC, the derating or the site's headroom.
    ``retention_days``: how long the ledger keeps command ids (longer than any validity).
    """

    watchdog_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    lost_after_failures: Annotated[int, Field(ge=1, le=1000)] = 3
    queue_limit: Annotated[int, Field(ge=1, le=10_000)] = 16
    telemetry_max_age_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    retention_days: Annotated[float, Field(ge=1, le=3650)] = 7.0


class OcppConfig(_Section):
    """The OCPP CSMS (charging station management system) endpoint."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9000
    meter_interval_s: Annotated[float, Field(ge=0.2, le=3600)] = 1.0
    response_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    heartbeat_interval_s: Annotated[int, Field(ge=1, le=86_400)] = 300
    security_profile: Literal[1, 2] = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @model_validator(mode="after")
    def _tls_paths(self) -> OcppConfig:
        if self.security_profile == 2 and (self.tls_cert is None or self.tls_key is None):
            raise ValueError("security_profile 2 needs tls_cert and tls_key")
        return self


API_TOKEN_ENV = "GRIDFLEX_API_TOKEN"
"""The environment variable that gives the API's bearer token when the site file has none."""

_Token = Annotated[str, Field(min_length=16, max_length=256, pattern=r"^[\x21-\x7e]+$")]


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as ``(host, port)``; ValueError when malformed."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError
    elif ":" in host:
        raise ValueError("expected an IPv6 address in brackets, e.g. [::1]:8080")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError("expected a port number 1..65535")
    return host, port


class ApiConfig(_Section):
    """The REST API that ``gridflex control`` serves (FastAPI + uvicorn).

    A site file with an ``[api]`` table serves it unless ``enabled = false``. ``token`` is
    the bearer token every route but ``/api/v1/health`` requires; without it the token comes
    from ``GRIDFLEX_API_TOKEN`` (see :func:`resolve_api_token`). TLS when both ``tls_cert``
    and ``tls_key`` are set (PEM files, relative to the site file).
    """

    enabled: bool = True
    listen: str = "127.0.0.1:8080"
    token: _Token | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        split_listen(value)
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        return self

    @property
    def host(self) -> str:
        """The address to listen on (IPv6 without brackets)."""
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """The TCP port to listen on."""
        return split_listen(self.listen)[1]

    @property
    def tls(self) -> bool:
        """Whether the API is served over HTTPS."""
        return self.tls_cert is not None and self.tls_key is not None


def resolve_api_token(
    api: ApiConfig, source: str | Path | None, environ: Mapping[str, str] = os.environ
) -> str:
    """The API's bearer token: ``[api] token`` of the site file, else ``GRIDFLEX_API_TOKEN``.

    Raises ``ConfigError`` naming the file and the key when neither gives a usable token
    (16 to 256 visible ASCII characters).
    """
    if api.token is not None:
        return api.token
    value = environ.get(API_TOKEN_ENV, "")
    where = source if source is not None else "<memory>"
    if not value:
        raise ConfigError(
            f"config error in {where}: api.token: required to serve the API "
            f"(or set {API_TOKEN_ENV}); e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'"
        )
    try:
        ApiConfig(token=value)
    except ValidationError:
        raise ConfigError(
            f"config error in environment: {API_TOKEN_ENV}: expected 16 to 256 visible "
            "ASCII characters"
        ) from None
    return value


class _AssetBase(_Section):
    id: _AssetId
    max_charge_w: _NonNegW
    max_discharge_w: _NonNegW = 0.0
    capacity_wh: Annotated[float, Field(gt=0)] | None = None
    soc_min_pct: _Pct = 10.0
    soc_max_pct: _Pct = 90.0
    base_setpoint_w: float = Field(
        default=0.0, description="the schedule the frequency response is added to, + charge"
    )
    droop: DroopOverride | None = None
    ramp_w_per_s: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="largest setpoint change per second the writer allows"
    )
    default_setpoint_w: float = Field(
        default=0.0,
        description="where the watchdog and the device's reversion timer put the asset",
    )

    @model_validator(mode="after")
    def _soc_order(self) -> Any:
        if self.soc_min_pct >= self.soc_max_pct:
            raise ValueError("soc_min_pct must be below soc_max_pct")
        for name in ("base_setpoint_w", "default_setpoint_w"):
            if not -self.max_discharge_w <= getattr(self, name) <= self.max_charge_w:
                raise ValueError(f"{name} must lie within -max_discharge_w..max_charge_w")
        return self


class InverterAsset(_AssetBase):
    """A bidirectional inverter (with battery) read over SunSpec Modbus TCP."""

    kind: Literal["inverter"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit_id: Annotated[int, Field(ge=0, le=247)] = 1


class EvseAsset(_AssetBase):
    """One EVSE of a charging station that connects to gridflex's CSMS over OCPP.

    A station with several EVSEs is several assets with the same ``station_id`` and their
    own ``evse_id`` (OCPP 2.x numbers the EVSEs of a station from 1); their ``password``
    and ``station_max_w`` must agree.
    """

    kind: Literal["evse"]
    station_id: Annotated[str, Field(min_length=1, max_length=48)] | None = None
    evse_id: Annotated[int, Field(ge=1, le=99)] = Field(
        default=1, description="the EVSE's number within its station (OCPP evseId)"
    )
    station_max_w: _NonNegW | None = Field(
        default=None,
        description="limit of the station's EVSEs together, sent as a "
        "ChargingStationMaxProfile (evseId 0); none = not sent",
    )
    password: Annotated[str, Field(min_length=16, max_length=40)] | None = Field(
        default=None, description="HTTP Basic auth password (OCPP: 16 to 40 characters)"
    )

    @property
    def station(self) -> str:
        """The OCPP station identity (the last path segment of its WebSocket URL)."""
        return self.station_id or self.id


Asset = Annotated[InverterAsset | EvseAsset, Field(discriminator="kind")]


class SiteConfig(_Section):
    """One site: its identity, broker, history and assets."""

    id: _AssetId
    nominal_frequency_hz: Literal[50, 60] = 50
    max_import_w: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="transformer import limit of the site; none = unlimited"
    )
    max_export_w: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="transformer export limit of the site; none = unlimited"
    )
    mqtt: MqttConfig = MqttConfig()
    history: HistoryConfig = HistoryConfig()
    modbus: ModbusConfig = ModbusConfig()
    pipeline: PipelineConfig = PipelineConfig()
    ocpp: OcppConfig = OcppConfig()
    dispatch: DispatchConfig = DispatchConfig()
    control: ControlConfig = ControlConfig()
    api: ApiConfig | None = Field(
        default=None, description="the REST API of gridflex control; none = not served"
    )
    assets: list[Asset] = Field(default_factory=list)
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_ids(self) -> SiteConfig:
        seen: set[str] = set()
        for asset in self.assets:
            if asset.id in seen:
                raise ValueError(f"asset id {asset.id!r} appears twice")
            seen.add(asset.id)
        evses = [(a.station, a.evse_id) for a in self.evses]
        if len(set(evses)) != len(evses):
            raise ValueError("two evse assets share a station_id and evse_id")
        return self

    @property
    def inverters(self) -> list[InverterAsset]:
        """The SunSpec inverters of the site."""
        return [a for a in self.assets if isinstance(a, InverterAsset)]

    @property
    def evses(self) -> list[EvseAsset]:
        """The OCPP charging stations of the site."""
        return [a for a in self.assets if isinstance(a, EvseAsset)]


def _key(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    """Render a pydantic location as a TOML key path (``assets[2].max_charge_w``)."""
    out = ""
    node: Any = raw
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        elif part in ("inverter", "evse") and isinstance(node, dict) and node.get("kind") == part:
            continue  # discriminator tag inserted by pydantic, not a key in the file
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


#: Keys whose value an error message never repeats (secrets).
_SECRET_KEYS = frozenset({"token", "password"})


def _expectation(err: Any) -> str:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if err["type"] == "missing":
        return "required key is missing"
    if err["type"] == "extra_forbidden":
        return "unknown key"
    msg = msg.replace("Input should be ", "expected ").replace("input should be ", "expected ")
    msg = msg.replace("greater than or equal to", ">=").replace("less than or equal to", "<=")
    msg = msg.replace("greater than", ">").replace("less than", "<")
    text = msg[0].lower() + msg[1:] if msg else msg
    secret = bool(err["loc"]) and err["loc"][-1] in _SECRET_KEYS
    if "input" in err and err["type"] not in ("model_type",) and not secret:
        text += f", got {err['input']!r}"
    return text


def parse_site(raw: dict[str, Any], source: str | Path = "<memory>") -> SiteConfig:
    """Validate a site from an already parsed TOML/dict document.

    The document has a ``[site]`` table (``id``, ``nominal_frequency_hz``), optional
    ``[mqtt]``, ``[history]``, ``[modbus]``, ``[pipeline]``, ``[ocpp]``, ``[api]`` tables and an
    ``[[assets]]`` array. Raises ``ConfigError`` naming the source, the key and the expectation.
    """
    doc = dict(raw)
    site_table = doc.pop("site", None)
    if not isinstance(site_table, dict):
        raise ConfigError(f"config error in {source}: site: expected a [site] table with an id")
    merged = {**site_table, **doc}
    try:
        site = SiteConfig.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            # Keys of the [site] table are validated at the top level of the model.
            key = _key(loc, merged)
            if loc and loc[0] in site_table:
                key = f"site.{key}"
            lines.append(f"{key}: {_expectation(err)}")
        raise ConfigError(f"config error in {source}: " + "; ".join(lines)) from None
    return site.model_copy(update={"source": Path(source) if source != "<memory>" else None})


def load_site(path: str | Path) -> SiteConfig:
    """Read and validate a site file; relative history/TLS paths resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"config error in {path}: cannot read the file ({exc.strerror})"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config error in {path}: not valid TOML ({exc})") from None
    site = parse_site(raw, path)
    base = path.resolve().parent

    def _abs(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    history = site.history.model_copy(update={"dir": _abs(site.history.dir)})
    ocpp = site.ocpp.model_copy(
        update={"tls_cert": _abs(site.ocpp.tls_cert), "tls_key": _abs(site.ocpp.tls_key)}
    )
    pipeline = site.pipeline.model_copy(update={"recovery_dir": _abs(site.pipeline.recovery_dir)})
    api = site.api
    if api is not None:
        api = api.model_copy(update={"tls_cert": _abs(api.tls_cert), "tls_key": _abs(api.tls_key)})
    return site.model_copy(
        update={"history": history, "ocpp": ocpp, "pipeline": pipeline, "api": api}
    )
