"""OCPP security profiles 1 and 2: HTTP Basic auth, and TLS with Basic auth.

OCPP 2.0.1/2.1 Part 2, A00 "Security": with profile 1 the charging station sends HTTP Basic
credentials in the WebSocket upgrade request, with the station identity as user name; with
profile 2 the same happens inside a TLS connection (server certificate only). Profile 3
(TLS client certificates) is not implemented.
"""

from __future__ import annotations

import hmac
import os
import ssl
import stat
from pathlib import Path
from urllib.parse import unquote, urlsplit

from websockets.exceptions import InvalidHeader
from websockets.headers import parse_authorization_basic

__all__ = [
    "KeyFileError",
    "check_basic_auth",
    "check_private_key_file",
    "server_ssl_context",
    "station_id_from_path",
]


class KeyFileError(ValueError):
    """A TLS private key that must not be used (missing, or readable by others)."""


def station_id_from_path(path: str) -> str | None:
    """The station identity from a WebSocket path: ``/ocpp/{id}`` or ``/{id}``.

    The identity is percent-decoded (OCPP-J: it is URL-encoded in the path); None for any
    other shape of path.
    """
    parts = [p for p in urlsplit(path).path.split("/") if p]
    if len(parts) == 2 and parts[0] == "ocpp":
        raw = parts[1]
    elif len(parts) == 1:
        raw = parts[0]
    else:
        return None
    station_id = unquote(raw)
    return station_id if 0 < len(station_id) <= 48 else None


def check_basic_auth(authorization: str | None, station_id: str, password: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``station_id`` and its password.

    Comparison is constant-time; a station without a configured password never passes.
    """
    if authorization is None or password is None:
        return False
    try:
        username, given = parse_authorization_basic(authorization)
    except InvalidHeader:
        return False
    user_ok = hmac.compare_digest(username.encode(), station_id.encode())
    password_ok = hmac.compare_digest(given.encode(), password.encode())
    return user_ok and password_ok


def check_private_key_file(key_path: Path) -> None:
    """Refuse a private key file that is missing or that group or others may access.

    Raises ``KeyFileError`` with the fix in the message (``chmod 600``).
    """
    try:
        mode = stat.S_IMODE(os.stat(key_path).st_mode)
    except OSError as exc:
        raise KeyFileError(f"{key_path}: cannot read the private key ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{key_path}: the private key is readable by group or others (mode {mode:04o}); "
            f"run `chmod 600 {key_path}`"
        )


def server_ssl_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context for security profile 2, after checking the key file."""
    check_private_key_file(key_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=cert_path, keyfile=key_path)
    except (OSError, ssl.SSLError) as exc:
        raise KeyFileError(f"{cert_path} / {key_path}: cannot load ({exc})") from None
    return context
