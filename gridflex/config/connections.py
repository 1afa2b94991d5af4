"""Where the processes connect and listen: ``[mqtt]``, ``[api]`` and ``[metrics]``.

The broker every process connects to, the REST API ``gridflex control`` serves and the
Prometheus endpoint of each long-running command.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from gridflex.config.base import _AllowFrom, _FilePath, _Section, split_listen

__all__ = ["METRICS_COMPONENTS", "ApiConfig", "MetricsConfig", "MqttConfig"]


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


_Token = Annotated[str, Field(min_length=16, max_length=256, pattern=r"^[\x21-\x7e]+$")]


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
