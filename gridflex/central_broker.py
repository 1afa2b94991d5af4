"""The central broker's users and ACL: ``gridflex broker-config --central central.toml``.

Writes into ``--out``, as for a site broker (``gridflex.broker_config``): ``mosquitto.conf``
(no anonymous access, the listener of the central's ``[mqtt] url``, TLS for ``mqtts://``),
``passwd``, ``acl`` and one credentials file per user under ``credentials/``:

- ``{central}-central`` (``credentials/central.toml``): ``gridflex central`` reads every
  site's summary and writes every site's target;
- ``{site}-bridge`` (``credentials/bridge-{site}.toml``), one per site of ``central.sites``:
  the site broker's bridge writes that site's summary and reads that site's target, nothing
  else (give the file to that site's ``broker-config --central-credentials``);
- ``{central}-integrator`` (``credentials/integrator.toml``): reads everything.

Running it again keeps the passwords already written unless ``--rotate``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gridflex.access import check_private_file, write_private
from gridflex.broker_config import (
    BrokerLimits,
    Credentials,
    mosquitto_conf,
    mosquitto_password_hash,
    read_credentials,
)
from gridflex.contract import PREFIX
from gridflex.contract.topics import summary_topic, target_topic

__all__ = ["CentralBrokerFiles", "central_acl_rules", "write_central_broker_config"]

Rule = tuple[Literal["read", "write"], str]


@dataclass(frozen=True)
class CentralBrokerFiles:
    """What :func:`write_central_broker_config` wrote: the conf and each user's file."""

    conf: Path
    credentials: dict[str, Path]  # "central", "integrator", "bridge-{site}"


def central_acl_rules(central_id: str, sites: list[str]) -> dict[str, tuple[str, list[Rule]]]:
    """Per credentials name: the broker user and what it may read and write."""
    users: dict[str, tuple[str, list[Rule]]] = {
        "central": (
            f"{central_id}-central",
            [("read", f"{PREFIX}/+/summary"), ("write", f"{PREFIX}/+/target")],
        ),
        "integrator": (f"{central_id}-integrator", [("read", f"{PREFIX}/#")]),
    }
    for site in sites:
        users[f"bridge-{site}"] = (
            f"{site}-bridge",
            [("write", summary_topic(site)), ("read", target_topic(site))],
        )
    return users


def _acl_text(users: dict[str, tuple[str, list[Rule]]]) -> str:
    lines = ["# written by `gridflex broker-config --central`", ""]
    for username, rules in users.values():
        lines.append(f"user {username}")
        lines += [f"topic {access} {topic}" for access, topic in rules]
        lines.append("")
    return "\n".join(lines)


def write_central_broker_config(
    central_id: str,
    sites: list[str],
    out_dir: Path,
    *,
    bind: str,
    port: int,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    persistence_dir: Path | None = None,
    rotate: bool = False,
    extra_conf: str = "",
) -> CentralBrokerFiles:
    """Write the central broker's conf, password file, ACL and credential files."""
    if tls_key is not None:
        check_private_file(tls_key, "TLS private key")
    out_dir.mkdir(parents=True, exist_ok=True)
    cred_dir = out_dir / "credentials"
    cred_dir.mkdir(mode=0o700, exist_ok=True)
    cred_dir.chmod(0o700)
    users = central_acl_rules(central_id, sites)
    paths: dict[str, Path] = {}
    hashes = []
    for name, (username, _rules) in users.items():
        path = cred_dir / f"{name}.toml"
        creds = None
        if not rotate and path.exists():
            creds = read_credentials(path)
        if creds is None or creds.username != username:
            creds = Credentials(username, secrets.token_urlsafe(24))
            write_private(
                path,
                f"# MQTT user {username} of the central broker, written by "
                f"`gridflex broker-config --central`; keep it mode 600.\n"
                f'username = "{creds.username}"\npassword = "{creds.password}"\n',
            )
        paths[name] = path
        hashes.append(f"{creds.username}:{mosquitto_password_hash(creds.password)}")
    password_file = out_dir / "passwd"
    write_private(password_file, "\n".join(hashes) + "\n")
    acl_file = out_dir / "acl"
    write_private(acl_file, _acl_text(users))
    conf = out_dir / "mosquitto.conf"
    conf.write_text(
        mosquitto_conf(
            bind=bind,
            port=port,
            password_file=password_file.resolve(),
            acl_file=acl_file.resolve(),
            tls_cert=tls_cert.resolve() if tls_cert else None,
            tls_key=tls_key.resolve() if tls_key else None,
            persistence_dir=persistence_dir.resolve() if persistence_dir else None,
            extra=extra_conf,
            limits=BrokerLimits(),
        ),
        encoding="utf-8",
    )
    return CentralBrokerFiles(conf, paths)
