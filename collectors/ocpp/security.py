"""OCPP security profiles 1 to 3, and the slow-down of stations that fail to authenticate.

OCPP 2.0.1/2.1 Part 2, A00 "Security": with profile 1 the charging station sends HTTP Basic
credentials in the WebSocket upgrade request, with the station identity as user name; with
profile 2 the same happens inside a TLS connection (server certificate only); with profile 3
the station authenticates with a TLS client certificate signed by the CA the CSMS trusts,
and the certificate's subject CN is the station identity (no Basic auth).

:class:`FailedAuthDelay` answers a station or an address that keeps failing
authentication ever later (doubling, bounded), so guessing passwords is slow.
"""

from __future__ import annotations

import hmac
import os
import ssl
import stat
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from websockets.exceptions import InvalidHeader
from websockets.headers import parse_authorization_basic

from gridflex.access import systemd_credential

__all__ = [
    "FailedAuthDelay",
    "KeyFileError",
    "certificate_identity",
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

    Raises ``KeyFileError`` with the fix in the message (``chmod 600``). A key systemd
    passes in ``$CREDENTIALS_DIRECTORY`` is only checked to exist.
    """
    try:
        mode = stat.S_IMODE(os.stat(key_path).st_mode)
    except OSError as exc:
        raise KeyFileError(f"{key_path}: cannot read the private key ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and not systemd_credential(key_path):
        raise KeyFileError(
            f"{key_path}: the private key is readable by group or others (mode {mode:04o}); "
            f"run `chmod 600 {key_path}`"
        )


def server_ssl_context(
    cert_path: Path, key_path: Path, client_ca: Path | None = None
) -> ssl.SSLContext:
    """A TLS 1.2+ server context, after checking the key file.

    Profile 2 without ``client_ca``; profile 3 with it: a client certificate signed by
    ``client_ca`` is then required at the TLS handshake.
    """
    check_private_key_file(key_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=cert_path, keyfile=key_path)
    except (OSError, ssl.SSLError) as exc:
        raise KeyFileError(f"{cert_path} / {key_path}: cannot load ({exc})") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise KeyFileError(f"{client_ca}: cannot load the station CA ({exc})") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def certificate_identity(peercert: dict[str, Any] | None) -> str | None:
    """The subject CN of a verified peer certificate (``SSLSocket.getpeercert()``), or None."""
    if not peercert:
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


@dataclass
class FailedAuthDelay:
    """How long to wait before answering a failed authentication, per station and address.

    Each failure of a station identity or of a peer address doubles the delay of the next
    answer to either, from ``base_s`` up to ``max_s``; a success clears the station's and
    the address's count, and counts older than ``forget_s`` are forgotten. A delay beyond
    the client's handshake timeout would only turn the 401 into a timeout. At most
    ``max_keys`` keys are remembered (the oldest go first), so memory stays bounded.
    """

    base_s: float = 0.5
    max_s: float = 8.0  # below the WebSocket handshake's 10 s timeout
    forget_s: float = 900.0
    max_keys: int = 10_000
    _fails: OrderedDict[str, tuple[int, float]] = field(default_factory=OrderedDict)

    def delay_s(self, station_id: str | None, address: str | None, now_s: float) -> float:
        """The delay before the next failure is answered (0 when neither has failed)."""
        count = max(self._count(f"s:{station_id}", now_s), self._count(f"a:{address}", now_s))
        if count == 0:
            return 0.0
        return float(min(self.max_s, self.base_s * 2 ** (count - 1)))

    def failed(self, station_id: str | None, address: str | None, now_s: float) -> None:
        """Count one failed authentication of ``station_id`` from ``address``."""
        for key in (f"s:{station_id}", f"a:{address}"):
            count = self._count(key, now_s) + 1
            self._fails[key] = (count, now_s)
            self._fails.move_to_end(key)
        while len(self._fails) > self.max_keys:
            self._fails.popitem(last=False)

    def succeeded(self, station_id: str | None, address: str | None) -> None:
        """Clear the counts of a station that authenticated and of its address."""
        self._fails.pop(f"s:{station_id}", None)
        self._fails.pop(f"a:{address}", None)

    def _count(self, key: str, now_s: float) -> int:
        entry = self._fails.get(key)
        if entry is None:
            return 0
        count, last_s = entry
        if now_s - last_s > self.forget_s:
            del self._fails[key]
            return 0
        return count
