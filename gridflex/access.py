"""Access checks shared by the interfaces: address allow lists and private files.

Two small rules every gridflex listener and every secret follow:

- ``[api] allow_from`` / ``[ocpp] allow_from``: a peer whose address is in none of the
  listed networks is refused (HTTP 403) before any authentication; an empty list allows
  every peer that can reach the listen address.
- A private key, a password file or a credentials file that group or others may read is
  refused with the fix in the message (``chmod 600``), never used. A file that systemd
  passes in ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``) is exempt: systemd restricts
  it to the service's user, with an ACL that shows in the group bits.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "IpNetwork",
    "PrivateFileError",
    "address_allowed",
    "check_private_file",
    "systemd_credential",
    "write_private",
]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class PrivateFileError(ValueError):
    """A secret file that must not be used: missing, unreadable, or readable by others."""


def address_allowed(address: str | None, allow_from: Sequence[IpNetwork]) -> bool:
    """Whether a peer at ``address`` may connect; every peer when ``allow_from`` is empty.

    An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) is checked as its IPv4 address; an
    address that is missing or not an IP address (a Unix socket) is refused when a list is
    given.
    """
    if not allow_from:
        return True
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in allow_from)


def systemd_credential(path: Path, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``path`` is a file systemd passed in ``$CREDENTIALS_DIRECTORY``."""
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return False
    return Path(os.path.abspath(path)).parent == Path(os.path.abspath(directory))


def check_private_file(path: Path, what: str = "private file") -> None:
    """Refuse ``path`` when it is missing or group or others have any access to it.

    Raises ``PrivateFileError`` naming the file, its mode and the fix. A systemd
    credential (:func:`systemd_credential`) is only checked to exist.
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        raise PrivateFileError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO) and not systemd_credential(path):
        raise PrivateFileError(
            f"{path}: the {what} is accessible to group or others (mode {mode:04o}); "
            f"run `chmod 600 {path}`"
        )


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (mode 0600 from the start)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
