"""The ``[api]`` section of the site file and where the API's token comes from."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridflex.config import API_TOKEN_ENV, ApiConfig, ConfigError, load_site, resolve_api_token

TOKEN = "file-token-0123456789abcdef"

SITE = """
[site]
id = "s1"
"""


def _load(tmp_path: Path, api: str) -> ApiConfig | None:
    path = tmp_path / "site.toml"
    path.write_text(SITE + api, encoding="utf-8")
    return load_site(path).api


def test_no_api_table_means_no_api(tmp_path: Path) -> None:
    assert _load(tmp_path, "") is None


def test_api_defaults(tmp_path: Path) -> None:
    api = _load(tmp_path, "[api]\n")
    assert api == ApiConfig()
    assert (api.enabled, api.host, api.port, api.token, api.tls) == (
        True,
        "127.0.0.1",
        8080,
        None,
        False,
    )


def test_tls_paths_resolve_against_the_site_file(tmp_path: Path) -> None:
    api = _load(tmp_path, '[api]\ntls_cert = "certs/api.pem"\ntls_key = "/etc/api.key"\n')
    assert api is not None
    assert api.tls
    assert api.tls_cert == tmp_path / "certs" / "api.pem"
    assert api.tls_key == Path("/etc/api.key")


def test_ipv6_listen_address(tmp_path: Path) -> None:
    api = _load(tmp_path, '[api]\nlisten = "[::1]:8443"\n')
    assert api is not None
    assert (api.host, api.port) == ("::1", 8443)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('listen = "8080"', "api.listen: expected HOST:PORT"),
        ('listen = "127.0.0.1:0"', "api.listen: expected a port number 1..65535"),
        ('listen = "127.0.0.1:70000"', "api.listen: expected a port number 1..65535"),
        ('listen = "::1:8080"', "api.listen: expected an IPv6 address in brackets"),
        ('tls_cert = "a.pem"', "api: tls_cert and tls_key go together"),
        ('token = "short"', "api.token: string should have at least 16 characters"),
        ('token = "has spaces in the token"', "api.token: string should match pattern"),
        ("port = 8080", "api.port: unknown key"),
    ],
)
def test_bad_api_table_names_the_file_and_key(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, f"[api]\n{table}\n")
    assert f"config error in {tmp_path / 'site.toml'}: " in str(info.value)
    assert message in str(info.value)


def test_a_bad_token_is_not_repeated_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, '[api]\ntoken = "secret!"\n')
    assert "secret!" not in str(info.value)


def test_token_from_the_file_wins_over_the_environment() -> None:
    api = ApiConfig(token=TOKEN)
    assert (
        resolve_api_token(api, "site.toml", {API_TOKEN_ENV: "env-token-0123456789abcdef"}) == TOKEN
    )


def test_token_from_the_environment_when_the_file_has_none() -> None:
    env = {API_TOKEN_ENV: "env-token-0123456789abcdef"}
    assert resolve_api_token(ApiConfig(), "site.toml", env) == "env-token-0123456789abcdef"


def test_no_token_anywhere_names_the_file_key_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_api_token(ApiConfig(), "site.toml", {})
    text = str(info.value)
    assert text.startswith("config error in site.toml: api.token: required to serve the API")
    assert API_TOKEN_ENV in text


def test_a_bad_token_in_the_environment_is_refused_without_repeating_it() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_api_token(ApiConfig(), "site.toml", {API_TOKEN_ENV: "short"})
    assert API_TOKEN_ENV in str(info.value)
    assert "short" not in str(info.value).replace("16 to 256", "")
