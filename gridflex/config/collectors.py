"""The collectors: SunSpec Modbus TCP polling (``[modbus]``) and the OCPP CSMS (``[ocpp]``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from gridflex.config.base import _AllowFrom, _FilePath, _Section
from gridflex.config.errors import FieldError

__all__ = ["ModbusConfig", "OcppConfig"]


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
