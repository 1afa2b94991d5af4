"""Site configuration: one TOML file describes one site and its assets.

The file is read and validated once at start-up into frozen, typed objects. Any error names
the file, the key and what was expected, for example::

    config error in site.toml: assets[id=inv-004].max_charge_w: expected >= 0, got -5

Types are strict: a number is a TOML number (an integer is accepted where a float is
expected), never a quoted string or a boolean; messages never repeat a secret (see
``gridflex.config.errors``).

The package, by concern: :mod:`~gridflex.config.load` reads a file
(:func:`load_site`, :func:`parse_site`), :mod:`~gridflex.config.errors` words its errors,
:mod:`~gridflex.config.credentials` finds the secrets a process runs with; the sections are
:mod:`~gridflex.config.site` (the site and its tables), :mod:`~gridflex.config.assets`,
:mod:`~gridflex.config.connections` (``[mqtt]``, ``[api]``, ``[metrics]``),
:mod:`~gridflex.config.collectors` (``[modbus]``, ``[ocpp]``), :mod:`~gridflex.config.data`
(``[history]``, ``[pipeline]``, ``[billing]``) and :mod:`~gridflex.config.dispatch`
(``[dispatch]``, ``[control]``), on the strict base of :mod:`~gridflex.config.base`. Every
public name is importable from ``gridflex.config`` itself.

See ``examples/site.toml`` for a complete, commented example.
"""

from __future__ import annotations

from gridflex.config.assets import EvseAsset, InverterAsset
from gridflex.config.base import split_listen
from gridflex.config.collectors import ModbusConfig, OcppConfig
from gridflex.config.connections import METRICS_COMPONENTS, ApiConfig, MetricsConfig, MqttConfig
from gridflex.config.credentials import (
    API_TOKEN_ENV,
    CREDENTIAL_API_TLS_KEY,
    CREDENTIAL_API_TOKEN,
    CREDENTIAL_MQTT,
    CREDENTIAL_OCPP_TLS_KEY,
    MQTT_CREDENTIALS_ENV,
    credential_path,
    resolve_api_token,
    resolve_mqtt_credentials,
)
from gridflex.config.data import HISTORY_STREAMS, BillingConfig, HistoryConfig, PipelineConfig
from gridflex.config.dispatch import (
    ControlConfig,
    DispatchConfig,
    DroopConfig,
    DroopOverride,
    EvDefaults,
    FcrConfig,
)
from gridflex.config.errors import ConfigError
from gridflex.config.load import load_site, parse_site
from gridflex.config.site import SiteConfig

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
