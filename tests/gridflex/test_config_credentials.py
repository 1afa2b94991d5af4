"""Secrets passed by systemd (``LoadCredential=``, read from ``$CREDENTIALS_DIRECTORY``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.ocpp.security import KeyFileError, check_private_key_file
from gridflex.access import PrivateFileError, check_private_file
from gridflex.config import (
    API_TOKEN_ENV,
    CREDENTIAL_API_TLS_KEY,
    CREDENTIAL_API_TOKEN,
    CREDENTIAL_MQTT,
    CREDENTIAL_OCPP_TLS_KEY,
    MQTT_CREDENTIALS_ENV,
    ApiConfig,
    ConfigError,
    credential_path,
    load_site,
    resolve_api_token,
)

SECRET = "pw-from-systemd-never-echoed"
TOKEN = "tok-from-systemd-0123456789abcdef"


@pytest.fixture
def creds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A credentials directory as systemd makes it (files 0440: the ACL shows as group r)."""
    folder = tmp_path / "credentials"
    folder.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    monkeypatch.delenv(MQTT_CREDENTIALS_ENV, raising=False)
    monkeypatch.delenv(API_TOKEN_ENV, raising=False)
    return folder


def _put(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    path.chmod(0o440)
    return path


def _site(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "site.toml"
    path.write_text('[site]\nid = "s1"\n' + extra, encoding="utf-8")
    return path


def test_no_credentials_directory_means_no_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert credential_path(CREDENTIAL_MQTT) is None


def test_mqtt_credentials_come_from_the_systemd_credential(creds: Path, tmp_path: Path) -> None:
    _put(creds, CREDENTIAL_MQTT, f'username = "s1-control"\npassword = "{SECRET}"\n')
    site = load_site(_site(tmp_path, '[mqtt]\nusername = "shared"\npassword = "other"\n'))
    assert (site.mqtt.username, site.mqtt.password) == ("s1-control", SECRET)


def test_the_environment_variable_still_wins_over_the_credential(
    creds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _put(creds, CREDENTIAL_MQTT, f'username = "from-systemd"\npassword = "{SECRET}"\n')
    own = tmp_path / "own.toml"
    own.write_text('username = "from-env"\npassword = "x"\n', encoding="utf-8")
    own.chmod(0o600)
    monkeypatch.setenv(MQTT_CREDENTIALS_ENV, str(own))
    assert load_site(_site(tmp_path)).mqtt.username == "from-env"


def test_an_incomplete_credential_is_named_without_its_content(creds: Path, tmp_path: Path) -> None:
    _put(creds, CREDENTIAL_MQTT, f'password = "{SECRET}"\n')
    with pytest.raises(ConfigError, match=CREDENTIAL_MQTT) as err:
        load_site(_site(tmp_path))
    assert SECRET not in str(err.value)


def test_the_api_token_comes_from_the_credential_when_the_site_has_none(creds: Path) -> None:
    _put(creds, CREDENTIAL_API_TOKEN, TOKEN + "\n")
    env = {"CREDENTIALS_DIRECTORY": str(creds), API_TOKEN_ENV: "env-token-0123456789abcdef"}
    assert resolve_api_token(ApiConfig(), "site.toml", env) == TOKEN
    site_token = "site-token-0123456789abcdef"
    assert resolve_api_token(ApiConfig(token=site_token), "site.toml", env) == site_token


def test_a_bad_token_credential_is_refused_without_echoing_it(creds: Path) -> None:
    _put(creds, CREDENTIAL_API_TOKEN, "short")
    with pytest.raises(ConfigError) as err:
        resolve_api_token(ApiConfig(), "site.toml", {"CREDENTIALS_DIRECTORY": str(creds)})
    assert "short" not in str(err.value).replace(str(creds), "")


def test_tls_keys_come_from_the_credentials(creds: Path, tmp_path: Path) -> None:
    ocpp_key = _put(creds, CREDENTIAL_OCPP_TLS_KEY, "-----BEGIN PRIVATE KEY-----\n")
    api_key = _put(creds, CREDENTIAL_API_TLS_KEY, "-----BEGIN PRIVATE KEY-----\n")
    site = load_site(
        _site(
            tmp_path,
            '[ocpp]\nsecurity_profile = 2\ntls_cert = "c.pem"\ntls_key = "k.pem"\n'
            '[api]\nlisten = "127.0.0.1:8080"\ntls_cert = "c.pem"\ntls_key = "k.pem"\n',
        )
    )
    assert site.ocpp.tls_key == ocpp_key
    assert site.api is not None and site.api.tls_key == api_key
    assert site.ocpp.tls_cert == tmp_path / "c.pem"


def test_a_credential_passes_the_private_file_checks_another_file_does_not(
    creds: Path, tmp_path: Path
) -> None:
    key = _put(creds, CREDENTIAL_OCPP_TLS_KEY, "k")
    check_private_key_file(key)
    check_private_file(key)
    elsewhere = _put(tmp_path, "key.pem", "k")
    with pytest.raises(KeyFileError, match="chmod 600"):
        check_private_key_file(elsewhere)
    with pytest.raises(PrivateFileError, match="chmod 600"):
        check_private_file(elsewhere)
