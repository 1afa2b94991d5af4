"""Security keys of the site file: MQTT credentials files and ``allow_from`` lists."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from collectors.ocpp.settings import CsmsSettings
from gridflex.access import address_allowed
from gridflex.config import MQTT_CREDENTIALS_ENV, ConfigError, load_site

SITE = '[site]\nid = "s1"\n'
SECRET = "pw-that-must-never-be-echoed"


def _site(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SITE + extra, encoding="utf-8")
    return path


def _creds(tmp_path: Path, mode: int = 0o600, name: str = "pipeline.toml") -> Path:
    path = tmp_path / name
    path.write_text(f'username = "s1-pipeline"\npassword = "{SECRET}"\n', encoding="utf-8")
    path.chmod(mode)
    return path


def test_credentials_file_in_the_environment_gives_username_and_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MQTT_CREDENTIALS_ENV, str(_creds(tmp_path)))
    site = load_site(_site(tmp_path, '[mqtt]\nusername = "shared"\npassword = "other"\n'))
    assert (site.mqtt.username, site.mqtt.password) == ("s1-pipeline", SECRET)


def test_credentials_key_resolves_against_the_site_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MQTT_CREDENTIALS_ENV, raising=False)
    _creds(tmp_path)
    site = load_site(_site(tmp_path, '[mqtt]\ncredentials = "pipeline.toml"\n'))
    assert (site.mqtt.username, site.mqtt.password) == ("s1-pipeline", SECRET)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_credentials_file_readable_by_others_is_refused_without_echoing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    monkeypatch.setenv(MQTT_CREDENTIALS_ENV, str(_creds(tmp_path, mode)))
    with pytest.raises(ConfigError, match="chmod 600") as err:
        load_site(_site(tmp_path))
    assert MQTT_CREDENTIALS_ENV in str(err.value)
    assert SECRET not in str(err.value)


def test_missing_or_incomplete_credentials_file_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MQTT_CREDENTIALS_ENV, str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError, match=r"absent\.toml"):
        load_site(_site(tmp_path))
    partial = tmp_path / "partial.toml"
    partial.write_text(f'password = "{SECRET}"\n', encoding="utf-8")
    partial.chmod(0o600)
    monkeypatch.setenv(MQTT_CREDENTIALS_ENV, str(partial))
    with pytest.raises(ConfigError, match="username and password") as err:
        load_site(_site(tmp_path))
    assert SECRET not in str(err.value)


def test_credentials_key_and_inline_password_together_are_refused(tmp_path: Path) -> None:
    text = '[mqtt]\ncredentials = "c.toml"\nusername = "u"\npassword = "p"\n'
    with pytest.raises(ConfigError, match="mqtt: credentials replaces username and password"):
        load_site(_site(tmp_path, text))


def test_allow_from_lists_parse_into_networks(tmp_path: Path) -> None:
    text = (
        '[api]\nallow_from = ["127.0.0.1/32", "10.0.0.0/8"]\n'
        '[ocpp]\nallow_from = ["192.168.7.0/24", "fd00::/8"]\n'
    )
    site = load_site(_site(tmp_path, text))
    assert site.api is not None
    assert site.api.allow_from == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    )
    assert site.ocpp.allow_from[1] == ipaddress.ip_network("fd00::/8")
    assert load_site(_site(tmp_path)).ocpp.allow_from == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"10.0.0.0/8"', "expected a list of networks"),
        ('["10.0.0.1/8"]', "no host bits set), got '10.0.0.1/8'"),
        ('["not-an-ip"]', "got 'not-an-ip'"),
        ("[8]", "expected a network as a string, got 8"),
    ],
)
def test_bad_allow_from_names_the_key_and_the_value(
    tmp_path: Path, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_site(_site(tmp_path, f"[ocpp]\nallow_from = {value}\n"))
    assert "ocpp.allow_from" in str(err.value)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),
        ("127.0.0.2", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        (None, False),
        ("unix-socket", False),
    ],
)
def test_address_allowed_only_inside_the_listed_networks(
    address: str | None, allowed: bool
) -> None:
    networks = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))
    assert address_allowed(address, networks) is allowed


def test_an_empty_allow_list_allows_every_peer() -> None:
    assert address_allowed("203.0.113.9", ())


def test_security_profile_3_needs_the_station_ca_and_no_station_passwords(
    tmp_path: Path,
) -> None:
    tls = '[ocpp]\nsecurity_profile = 3\ntls_cert = "c.pem"\ntls_key = "c.key"\n'
    with pytest.raises(ConfigError, match="security_profile 3 needs tls_ca"):
        load_site(_site(tmp_path, tls))
    evse = '[[assets]]\nid = "cs-1"\nkind = "evse"\nmax_charge_w = 11000\n'
    site = load_site(_site(tmp_path, tls + 'tls_ca = "ca.pem"\n' + evse))
    assert site.ocpp.tls_ca == tmp_path / "ca.pem"
    settings = CsmsSettings.from_site(site)
    assert settings.security_profile == 3
    assert settings.stations["cs-1"].password is None


def test_repr_of_the_config_never_shows_the_mqtt_password_or_the_api_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MQTT_CREDENTIALS_ENV, raising=False)
    token = "t" * 32
    text = f'[mqtt]\nusername = "u"\npassword = "{SECRET}"\n[api]\ntoken = "{token}"\n'
    site = load_site(_site(tmp_path, text))
    assert site.mqtt.password == SECRET
    assert SECRET not in repr(site)
    assert token not in repr(site)


def test_collect_ocpp_with_a_missing_profile_3_ca_exits_2_naming_the_key(tmp_path: Path) -> None:
    key = tmp_path / "c.key"
    key.write_text("not used\n", encoding="utf-8")
    key.chmod(0o600)
    text = (
        '[ocpp]\nsecurity_profile = 3\ntls_cert = "c.pem"\ntls_key = "c.key"\n'
        'tls_ca = "missing-ca.pem"\n'
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gridflex.cli",
            "collect",
            "ocpp",
            "--site",
            str(_site(tmp_path, text)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert "ocpp.tls_ca" in done.stderr
    assert "missing-ca.pem" in done.stderr
