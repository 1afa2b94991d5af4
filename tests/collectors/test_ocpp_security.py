"""Security profiles 1 and 2: station identity from the path, Basic auth, the TLS key file."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from collectors.ocpp.security import (
    KeyFileError,
    check_basic_auth,
    check_private_key_file,
    station_id_from_path,
)

PASSWORD = "s3cret-password-16"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("path", "station"),
    [
        ("/ocpp/CS-001", "CS-001"),
        ("/CS-001", "CS-001"),
        ("/ocpp/CS%20001", "CS 001"),  # identities are URL-encoded in the path
        ("/ocpp/CS-001?x=1", "CS-001"),
        ("/", None),
        ("/a/b/c", None),
        ("/other/CS-001", None),
        ("/" + "x" * 49, None),  # OCPP identities are at most 48 characters
    ],
)
def test_station_id_from_path(path: str, station: str | None) -> None:
    assert station_id_from_path(path) == station


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (basic("CS-001", PASSWORD), True),
        (basic("CS-001", PASSWORD + "x"), False),  # wrong password
        (basic("CS-002", PASSWORD), False),  # user name must be the station identity
        (None, False),  # no credentials
        ("Bearer abc", False),
        ("Basic !!!", False),
    ],
)
def test_basic_auth_needs_station_id_and_its_password(header: str | None, ok: bool) -> None:
    assert check_basic_auth(header, "CS-001", PASSWORD) is ok


def test_station_without_password_never_passes() -> None:
    assert check_basic_auth(basic("CS-001", ""), "CS-001", None) is False


def test_private_key_readable_only_by_owner_is_accepted(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("k")
    os.chmod(key, 0o600)
    check_private_key_file(key)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_private_key_readable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "key.pem"
    key.write_text("k")
    os.chmod(key, mode)
    with pytest.raises(KeyFileError, match="chmod 600") as info:
        check_private_key_file(key)
    assert f"{mode:04o}" in str(info.value)


def test_missing_private_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        check_private_key_file(tmp_path / "nope.pem")
