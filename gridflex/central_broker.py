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

from dataclasses import dataclass
from pathlib import Path

from gridflex.broker_config import BrokerLimits, Credentials, Rule, write_users_config
from gridflex.contract import PREFIX
from gridflex.contract.topics import summary_topic, target_topic

__all__ = ["CentralBrokerFiles", "central_acl_rules", "write_central_broker_config"]


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
    files = write_users_config(
        out_dir,
        central_acl_rules(central_id, sites),
        acl_header="written by `gridflex broker-config --central`",
        credentials_text=_credentials_toml,
        bind=bind,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        persistence_dir=persistence_dir,
        rotate=rotate,
        extra_conf=extra_conf,
        limits=BrokerLimits(),
    )
    return CentralBrokerFiles(files.conf, dict(files.credentials))


def _credentials_toml(_name: str, creds: Credentials) -> str:
    return (
        f"# MQTT user {creds.username} of the central broker, written by "
        f"`gridflex broker-config --central`; keep it mode 600.\n"
        f'username = "{creds.username}"\npassword = "{creds.password}"\n'
    )
