"""Where a process's secrets come from: systemd credentials, the environment, files.

The site file may hold the API token and the MQTT password; a systemd credential
(``$CREDENTIALS_DIRECTORY``) or an environment variable can give them instead, so one site
file serves processes of different roles without holding their secrets.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from gridflex.access import PrivateFileError, check_private_file
from gridflex.config.connections import ApiConfig, MqttConfig
from gridflex.config.errors import ConfigError

__all__ = [
    "API_TOKEN_ENV",
    "CREDENTIAL_API_TLS_KEY",
    "CREDENTIAL_API_TOKEN",
    "CREDENTIAL_MQTT",
    "CREDENTIAL_OCPP_TLS_KEY",
    "MQTT_CREDENTIALS_ENV",
    "credential_path",
    "resolve_api_token",
    "resolve_mqtt_credentials",
]

API_TOKEN_ENV = "GRIDFLEX_API_TOKEN"
"""The environment variable that gives the API's bearer token when the site file has none."""


MQTT_CREDENTIALS_ENV = "GRIDFLEX_MQTT_CREDENTIALS"
"""The environment variable naming a process's MQTT credentials file (wins over the site)."""


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
