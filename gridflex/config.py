"""Site configuration: one TOML file describes one site and its assets.

The file is read and validated once at start-up into frozen, typed objects. Any error names
the file, the key and what was expected, for example::

    config error in site.toml: assets[id=inv-004].max_charge_w: expected >= 0, got -5

Types are strict: a number is a TOML number (an integer is accepted where a float is
expected), never a quoted string or a boolean; messages never repeat a secret (see
``gridflex.config_errors``).

See ``examples/site.toml`` for a complete, commented example.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gridflex.access import IpNetwork, PrivateFileError, check_private_file
from gridflex.config_errors import FieldError, format_validation_error
from gridflex.contract import ASSET_ID_PATTERN

__all__ = [
    "API_TOKEN_ENV",
    "CREDENTIAL_API_TLS_KEY",
    "CREDENTIAL_API_TOKEN",
    "CREDENTIAL_MQTT",
    "CREDENTIAL_OCPP_TLS_KEY",
    "HISTORY_STREAMS",
    "METRICS_COMPONENTS",
    "MQTT_CREDENTIALS_ENV",
    "ApiConfig",
    "BillingConfig",
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
    "MetricsConfig",
    "ModbusConfig",
    "MqttConfig",
    "OcppConfig",
    "PipelineConfig",
    "SiteConfig",
    "credential_path",
    "load_site",
    "parse_site",
    "resolve_api_token",
    "resolve_mqtt_credentials",
    "split_listen",
]

_AssetId = Annotated[str, Field(pattern=ASSET_ID_PATTERN)]
_NonNegW = Annotated[float, Field(ge=0)]
_Pct = Annotated[float, Field(ge=0, le=100)]
#: A file path: a TOML string is accepted although the sections are strict.
_FilePath = Annotated[Path, Field(strict=False)]


def _literal_values(annotation: Any) -> list[Any]:
    """The values of the ``Literal`` in ``annotation`` (through ``Annotated``/``Optional``)."""
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [v for arg in get_args(annotation) for v in _literal_values(arg)]


def _networks(value: Any) -> tuple[IpNetwork, ...]:
    if not isinstance(value, list | tuple):
        raise ValueError('expected a list of networks, e.g. ["127.0.0.1/32", "10.0.0.0/8"]')
    out: list[IpNetwork] = []
    for item in value:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            out.append(item)
            continue
        if not isinstance(item, str):
            raise ValueError(f"expected a network as a string, got {item!r}")
        try:
            out.append(ipaddress.ip_network(item, strict=True))
        except ValueError:
            raise ValueError(
                f"expected a network like 10.0.0.0/8 or fd00::/8 (no host bits set), got {item!r}"
            ) from None
    return tuple(out)


_AllowFrom = Annotated[tuple[IpNetwork, ...], BeforeValidator(_networks)]


class ConfigError(ValueError):
    """A site file that cannot be used; the message names file, key and expectation."""


class _Section(BaseModel):
    """A table of the site file: unknown keys refused, values frozen, types strict.

    Strict mode refuses ``true`` and ``"5000"`` for numbers (lax pydantic reads them as 1
    and 5000) while an integer still fills a float. Path fields must use ``_FilePath``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numeric_literal(cls, data: Any) -> Any:
        """Refuse ``true`` for ``Literal[1, 2]`` (``True == 1``: strict mode lets it pass)."""
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if not isinstance(value, bool) or field is None:
                    continue
                choices = [a for a in _literal_values(field.annotation) if not isinstance(a, str)]
                if choices:
                    expected = " or ".join(str(c) for c in choices)
                    raise FieldError(name, f"expected {expected}, got {str(value).lower()}")
        return data


class MqttConfig(_Section):
    """Broker connection.

    The credentials of a process: ``username``/``password``, or ``credentials``, a TOML
    file with both (``gridflex broker-config`` writes one per role, mode 0600); the
    ``GRIDFLEX_MQTT_CREDENTIALS`` environment variable names such a file and wins over the
    site file, so one site file serves processes of different roles (see
    :func:`resolve_mqtt_credentials`). An ``mqtts://`` broker's certificate is checked
    against the system's trust store; for a private CA, point ``SSL_CERT_FILE`` at it.
    """

    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    credentials: _FilePath | None = None
    queue_limit: Annotated[int, Field(ge=1)] = 100_000
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30

    @model_validator(mode="after")
    def _one_source_of_credentials(self) -> MqttConfig:
        if self.credentials is not None and (self.username or self.password):
            raise ValueError("credentials replaces username and password: set one or the other")
        if self.password is not None and self.username is None:
            raise ValueError("password needs a username")
        return self

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


#: The history streams (``gridflex.history.STREAMS``; listed here so that reading a site
#: file does not import DuckDB).
HISTORY_STREAMS: tuple[str, ...] = (
    "telemetry",
    "grid_frequency",
    "forecasts",
    "commands",
    "acks",
    "status_changes",
    "transactions",
    "events",
)
_MAX_RETENTION_DAYS = 36_500


def _retention_days(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        raise FieldError(key, f"expected a whole number of days, got {shown}")
    if not 1 <= value <= _MAX_RETENTION_DAYS:
        raise FieldError(key, f"expected 1 to {_MAX_RETENTION_DAYS} days, got {value}")
    return value


class HistoryConfig(_Section):
    """Where the Parquet history lives and how long it is kept.

    ``retention_days``: unset keeps everything; one number applies to every stream; a
    table (``[history.retention_days]``, ``telemetry = 400``) sets it per stream and keeps
    the streams it does not name. ``gridflex history prune`` removes the days older.
    Stored per stream (a number becomes the same number for each).
    """

    dir: _FilePath = Path("data")
    retention_days: dict[str, int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _retention_per_stream(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("retention_days") is None:
            return data
        value = data["retention_days"]
        if isinstance(value, dict):
            per_stream = {}
            for stream, days in value.items():
                if stream not in HISTORY_STREAMS:
                    raise FieldError(
                        f"retention_days.{stream}",
                        f"expected one of the streams {', '.join(HISTORY_STREAMS)}",
                    )
                per_stream[stream] = _retention_days(f"retention_days.{stream}", days)
        else:
            days = _retention_days("retention_days", value)
            per_stream = dict.fromkeys(HISTORY_STREAMS, days)
        return {**data, "retention_days": per_stream}

    def retention_for(self, stream: str) -> int | None:
        """Days ``stream`` is kept, None for ever."""
        return None if self.retention_days is None else self.retention_days.get(stream)


class ModbusConfig(_Section):
    """SunSpec Modbus TCP polling."""

    poll_interval_ms: Annotated[int, Field(ge=50, le=60_000)] = 200
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.0
    backoff_initial_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    failures_before_offline: Annotated[int, Field(ge=1, le=100)] = Field(
        default=3,
        description="polls failing in a row (timeouts, busy replies) before the device is "
        "taken offline and rediscovered; fewer cost only their slots",
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> ModbusConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise FieldError("backoff_max_s", "expected >= backoff_initial_s")
        return self


class PipelineConfig(_Section):
    """Stream analytics."""

    window_ms: Annotated[int, Field(ge=100, le=3_600_000)] = 1000
    allowed_lateness_ms: Annotated[int, Field(ge=0, le=60_000)] = 500
    recovery: bool = True
    recovery_dir: _FilePath | None = Field(
        default=None, description="Bytewax recovery database; default {history.dir}/recovery"
    )
    snapshot_interval_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    durable_ack: bool = Field(
        default=True,
        description="PUBACK telemetry and acks only once in the write-ahead log (fsynced)",
    )
    wal_dir: _FilePath | None = Field(
        default=None, description="Write-ahead log of received messages; default {history.dir}/wal"
    )
    receive_queue: Annotated[int, Field(ge=100, le=1_000_000)] = Field(
        default=10_000,
        description="Messages held between the MQTT socket and the dataflow, per receiver; "
        "when full the receiver stops reading (TCP back-pressure, the broker holds the rest)",
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
            raise FieldError("full_at_hz", "expected above deadband_hz")
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
    dispatch.refresh_s, 10)`` s). ``lost_after_failures``: a device the collector could not
    reach this many times in a row (nothing came back: status ``offline``) is a lost device,
    a fault latched until cleared; one that answers garbage (``error``) is not.
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


class BillingConfig(_Section):
    """Settlement of the history (``gridflex billing``, the ``settlements`` view).

    ``interval_min``: settlement interval, minutes, aligned to UTC midnight (so it divides
    the day). ``max_gap_s``: two register readings of an asset further apart than this make
    a gap, flagged in the intervals it touches.
    """

    interval_min: Annotated[int, Field(ge=1, le=1440)] = 15
    max_gap_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0

    @field_validator("interval_min")
    @classmethod
    def _divides_the_day(cls, value: int) -> int:
        if 1440 % value:
            raise ValueError("expected a divisor of 1440 (the minutes in a day)")
        return value


class OcppConfig(_Section):
    """The OCPP CSMS (charging station management system) endpoint.

    ``security_profile``: 1 (HTTP Basic), 2 (TLS and Basic; ``tls_cert``, ``tls_key``), 3
    (TLS with client certificates signed by ``tls_ca``; the identity is the certificate's
    CN). ``allow_from``: the networks (CIDR) stations may connect from; others get HTTP 403
    at the WebSocket handshake. Empty (the default): any peer that reaches ``host``.
    """

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9000
    meter_interval_s: Annotated[float, Field(ge=0.2, le=3600)] = 1.0
    response_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    heartbeat_interval_s: Annotated[int, Field(ge=1, le=86_400)] = 300
    security_profile: Literal[1, 2, 3] = 1
    tls_cert: _FilePath | None = None
    tls_key: _FilePath | None = None
    tls_ca: _FilePath | None = None
    allow_from: _AllowFrom = ()

    @model_validator(mode="after")
    def _tls_paths(self) -> OcppConfig:
        profile = self.security_profile
        if profile >= 2 and (self.tls_cert is None or self.tls_key is None):
            raise ValueError(f"security_profile {profile} needs tls_cert and tls_key")
        if profile == 3 and self.tls_ca is None:
            raise ValueError("security_profile 3 needs tls_ca (the CA of the station certificates)")
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
    and ``tls_key`` are set (PEM files, relative to the site file). ``allow_from``: the
    networks (CIDR) clients may connect from; others get 403 before the token is looked at.
    Empty (the default): any client that reaches ``listen``.
    """

    enabled: bool = True
    listen: str = "127.0.0.1:8080"
    token: _Token | None = Field(default=None, repr=False)
    allow_from: _AllowFrom = ()
    tls_cert: _FilePath | None = None
    tls_key: _FilePath | None = None

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


#: Names of the systemd credentials gridflex reads from ``$CREDENTIALS_DIRECTORY``
#: (``LoadCredential=NAME:/etc/gridflex/...`` in the unit): the MQTT credentials file
#: (TOML ``username``/``password``), the API token (its text), the TLS private keys.
CREDENTIAL_MQTT = "mqtt-credentials"
CREDENTIAL_API_TOKEN = "api-token"
CREDENTIAL_OCPP_TLS_KEY = "ocpp-tls-key"
CREDENTIAL_API_TLS_KEY = "api-tls-key"


def credential_path(name: str, environ: Mapping[str, str] = os.environ) -> Path | None:
    """``$CREDENTIALS_DIRECTORY/name`` when systemd passed that credential, else None."""
    directory = environ.get("CREDENTIALS_DIRECTORY", "")
    if not directory:
        return None
    path = Path(directory) / name
    return path if path.is_file() else None


#: The long-running commands, as keys of ``[metrics]`` (and the metrics' ``component``).
METRICS_COMPONENTS: tuple[str, ...] = ("collect_modbus", "collect_ocpp", "pipeline", "control")


class MetricsConfig(_Section):
    """Where each long-running command serves its Prometheus metrics (``HOST:PORT``).

    A key per command; unset (the default) = not served. ``--metrics-listen`` overrides
    the command's key. Two commands cannot share an address.
    """

    collect_modbus: str | None = None
    collect_ocpp: str | None = None
    pipeline: str | None = None
    control: str | None = None

    @field_validator("collect_modbus", "collect_ocpp", "pipeline", "control")
    @classmethod
    def _listen_is_host_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_listen(value)
        return value

    @model_validator(mode="after")
    def _distinct(self) -> MetricsConfig:
        seen: dict[str, str] = {}
        for key in METRICS_COMPONENTS:
            value = getattr(self, key)
            if value is not None and seen.setdefault(value, key) != key:
                raise ValueError(f"{seen[value]} and {key} both listen on {value}")
        return self


def resolve_api_token(
    api: ApiConfig, source: str | Path | None, environ: Mapping[str, str] = os.environ
) -> str:
    """The API's bearer token: the site file's, a systemd credential's, or the environment's.

    ``[api] token`` of the site file, else the systemd credential ``api-token``
    (:func:`credential_path`), else ``GRIDFLEX_API_TOKEN``. Raises ``ConfigError`` naming
    the file and the key when none gives a usable token (16 to 256 visible ASCII
    characters).
    """
    if api.token is not None:
        return api.token
    where = source if source is not None else "<memory>"
    credential = credential_path(CREDENTIAL_API_TOKEN, environ)
    if credential is not None:
        try:
            return ApiConfig(token=credential.read_text(encoding="utf-8").strip()).token or ""
        except (OSError, UnicodeDecodeError, ValidationError):
            raise ConfigError(
                f"config error in credential {credential}: expected 16 to 256 visible "
                "ASCII characters"
            ) from None
    value = environ.get(API_TOKEN_ENV, "")
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


MQTT_CREDENTIALS_ENV = "GRIDFLEX_MQTT_CREDENTIALS"
"""The environment variable naming a process's MQTT credentials file (wins over the site)."""


def resolve_mqtt_credentials(
    mqtt: MqttConfig, source: str | Path | None, environ: Mapping[str, str] = os.environ
) -> MqttConfig:
    """``mqtt`` with ``username``/``password`` read from the process's credentials file.

    The file is ``$GRIDFLEX_MQTT_CREDENTIALS`` when set, else the systemd credential
    ``mqtt-credentials`` (:func:`credential_path`), else ``[mqtt] credentials``; a TOML
    document with ``username`` and ``password``. Without either, ``mqtt`` is returned
    as it is. Raises ``ConfigError`` (naming the file, never the password) when the file is
    missing, readable by group or others, or incomplete.
    """
    env_path = environ.get(MQTT_CREDENTIALS_ENV, "")
    credential = credential_path(CREDENTIAL_MQTT, environ)
    if env_path:
        path, where = Path(env_path), f"environment: {MQTT_CREDENTIALS_ENV}"
    elif credential is not None:
        path, where = credential, f"systemd credential {CREDENTIAL_MQTT}"
    elif mqtt.credentials is not None:
        path, where = mqtt.credentials, f"{source or '<memory>'}: mqtt.credentials"
    else:
        return mqtt
    try:
        check_private_file(path, "MQTT credentials file")
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except PrivateFileError as exc:
        raise ConfigError(f"config error in {where}: {exc}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise ConfigError(
            f"config error in {where}: {path}: expected a readable TOML file with "
            "username and password"
        ) from None
    username, password = doc.get("username"), doc.get("password")
    if not isinstance(username, str) or not username or not isinstance(password, str):
        raise ConfigError(
            f"config error in {where}: {path}: expected string keys username and password"
        )
    return mqtt.model_copy(update={"username": username, "password": password})


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
            raise FieldError(
                "soc_min_pct",
                f"expected below soc_max_pct ({self.soc_max_pct:g}), got {self.soc_min_pct:g}",
            )
        for name in ("base_setpoint_w", "default_setpoint_w"):
            value = getattr(self, name)
            if not -self.max_discharge_w <= value <= self.max_charge_w:
                raise FieldError(
                    name,
                    f"expected within -max_discharge_w..max_charge_w "
                    f"({-self.max_discharge_w:g}..{self.max_charge_w:g}), got {value:g}",
                )
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
    billing: BillingConfig = BillingConfig()
    api: ApiConfig | None = Field(
        default=None, description="the REST API of gridflex control; none = not served"
    )
    metrics: MetricsConfig = MetricsConfig()
    assets: list[Asset] = Field(default_factory=list)
    source: _FilePath | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_ids(self) -> SiteConfig:
        """Each id, each inverter endpoint and each station EVSE belongs to one asset."""
        first: dict[tuple[str, object], int] = {}
        for position, asset in enumerate(self.assets):
            checks: list[tuple[str, object, str]] = [
                ("id", asset.id, f"expected unique asset ids, {asset.id!r} appears twice")
            ]
            if isinstance(asset, InverterAsset):
                where = f"{asset.host.lower()}:{asset.port} unit_id {asset.unit_id}"
                expectation = f"expected one inverter asset per host:port:unit_id, {where} twice"
                checks.append(("host", where, expectation))
            else:
                expectation = (
                    f"expected one asset per station and evse_id, station {asset.station!r} "
                    f"evse_id {asset.evse_id} twice"
                )
                checks.append(("evse_id", (asset.station, asset.evse_id), expectation))
            for key, value, expectation in checks:
                earlier = first.setdefault((key, value), position)
                if earlier != position:
                    raise FieldError(
                        f"assets[{earlier}].{key} and assets[{position}].{key}",
                        f"{expectation} (assets counted from 0)",
                    )
        return self

    @property
    def inverters(self) -> list[InverterAsset]:
        """The SunSpec inverters of the site."""
        return [a for a in self.assets if isinstance(a, InverterAsset)]

    @property
    def evses(self) -> list[EvseAsset]:
        """The OCPP charging stations of the site."""
        return [a for a in self.assets if isinstance(a, EvseAsset)]


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
        message = format_validation_error(exc, merged, frozenset(site_table))
        raise ConfigError(f"config error in {source}: {message}") from None
    return site.model_copy(update={"source": Path(source) if source != "<memory>" else None})


def load_site(path: str | Path) -> SiteConfig:
    """Read and validate a site file; relative history/TLS paths resolve against its folder.

    The MQTT credentials come from the process's credentials file when there is one
    (:func:`resolve_mqtt_credentials`); the systemd credentials ``ocpp-tls-key`` and
    ``api-tls-key`` (:func:`credential_path`) replace ``[ocpp] tls_key`` / ``[api] tls_key``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"config error in {path}: cannot read the file ({exc.strerror})"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config error in {path}: expected UTF-8 text, byte {exc.start} is not"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config error in {path}: not valid TOML ({exc})") from None
    site = parse_site(raw, path)
    base = path.resolve().parent

    def _abs(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    mqtt = site.mqtt.model_copy(update={"credentials": _abs(site.mqtt.credentials)})
    mqtt = resolve_mqtt_credentials(mqtt, path)
    history = site.history.model_copy(update={"dir": _abs(site.history.dir)})
    ocpp = site.ocpp.model_copy(
        update={
            "tls_cert": _abs(site.ocpp.tls_cert),
            "tls_key": credential_path(CREDENTIAL_OCPP_TLS_KEY) or _abs(site.ocpp.tls_key),
            "tls_ca": _abs(site.ocpp.tls_ca),
        }
    )
    pipeline = site.pipeline.model_copy(update={"recovery_dir": _abs(site.pipeline.recovery_dir)})
    api = site.api
    if api is not None:
        key = credential_path(CREDENTIAL_API_TLS_KEY) or _abs(api.tls_key)
        api = api.model_copy(update={"tls_cert": _abs(api.tls_cert), "tls_key": key})
    return site.model_copy(
        update={"mqtt": mqtt, "history": history, "ocpp": ocpp, "pipeline": pipeline, "api": api}
    )
