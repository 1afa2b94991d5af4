"""Reading a site file: TOML in, a validated :class:`~gridflex.config.site.SiteConfig` out."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gridflex.config.credentials import (
    CREDENTIAL_API_TLS_KEY,
    CREDENTIAL_OCPP_TLS_KEY,
    credential_path,
    resolve_mqtt_credentials,
)
from gridflex.config.errors import ConfigError, format_validation_error
from gridflex.config.site import SiteConfig

__all__ = ["load_site", "parse_site"]


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
