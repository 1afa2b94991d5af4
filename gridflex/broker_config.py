"""``gridflex broker-config``: a Mosquitto configuration with one user per role.

``gridflex broker-config --site site.toml --out DIR`` writes into ``DIR``:

- ``mosquitto.conf``: ``allow_anonymous false``, the password and ACL files, the listener of
  the site's ``[mqtt] url`` (``mqtts://`` gives a TLS listener with ``--tls-cert`` and
  ``--tls-key``), and the per-client queue limits gridflex is sized for (:class:`BrokerLimits`);
- ``passwd``: one user per role, PBKDF2-SHA512 hashes in Mosquitto 2's ``$7$`` format
  (written here, so ``mosquitto_passwd`` need not be installed), mode 0600;
- ``acl``: what each role may publish and read (:func:`acl_rules`);
- ``credentials/{role}.toml``: the user name and password of each role, mode 0600. A process
  reads its role's file through ``GRIDFLEX_MQTT_CREDENTIALS`` (or ``[mqtt] credentials``),
  so the shared site file holds no secret.

With ``--central-url mqtt[s]://host:port`` the configuration also holds a Mosquitto bridge
to the central broker of ``gridflex central`` (:func:`bridge_conf`): it publishes the site's
retained ``gridflex/v1/{site}/summary`` there, and only that, and brings back the site's
``gridflex/v1/{site}/target``. ``--central-credentials FILE`` (a TOML file with username and
password, mode 0600) logs the bridge in; the password then sits in ``mosquitto.conf``,
written mode 0600. ``--central-cafile`` names the CA of an ``mqtts://`` central.

The roles: ``collector`` (the Modbus collector and the OCPP CSMS), ``pipeline``,
``control`` and ``integrator`` (read only). Running it again keeps the passwords already in
``credentials/`` (running processes keep working); ``--rotate`` makes new ones.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import logging
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args
from urllib.parse import urlsplit

from gridflex.access import PrivateFileError, check_private_file, write_private
from gridflex.config import ConfigError, load_site
from gridflex.contract import PREFIX
from gridflex.mqtt_wire import DEFAULT_MAX_PACKET_SIZE

__all__ = [
    "ENVELOPE_OUTAGE_S",
    "ENVELOPE_RATE_PER_S",
    "ROLES",
    "BrokerFiles",
    "BrokerLimits",
    "Credentials",
    "Role",
    "acl_rules",
    "acl_text",
    "add_arguments",
    "bridge_conf",
    "main",
    "mosquitto_conf",
    "mosquitto_password_hash",
    "read_credentials",
    "role_username",
    "users_acl_text",
    "write_broker_config",
    "write_users_config",
]

log = logging.getLogger(__name__)

Role = Literal["collector", "pipeline", "control", "integrator"]
#: One ACL line: ``read`` or ``write`` and a topic filter.
Rule = tuple[Literal["read", "write"], str]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

#: The envelope the broker's per-client limits are sized for (docs/operations.md, "Bounds
#: and what happens at them"): a consumer on a persistent session (the pipeline) away or
#: stalled for ``ENVELOPE_OUTAGE_S`` while 1,000 assets publish 5 messages a second loses
#: nothing.
ENVELOPE_RATE_PER_S: Final = 5_000
ENVELOPE_OUTAGE_S: Final = 60


@dataclass(frozen=True)
class BrokerLimits:
    """Mosquitto's per-client limits, set deliberately in every configuration we write.

    Attributes:
        max_queued_messages: QoS 1 messages queued per client beyond those in flight (the
            envelope: 300,000). Mosquitto's default of 1,000 drops a slow subscriber's
            messages in a burst; 0 (unlimited) lets one stuck client take the machine's
            memory (and Mosquitto 2.0.21 mishandles 0, eclipse-mosquitto issue 3244).
        max_queued_bytes: The same queue in payload bytes: 256 MiB, twice the envelope's
            ~400-byte telemetry, so the message count is what binds.
        max_inflight_messages: QoS 1 messages the broker sends a client before its PUBACKs
            (the pipeline's write-ahead log holds PUBACKs until the fsync).

    At a full queue Mosquitto drops what arrives for that client (the newest), counted in
    ``$SYS/broker/publish/messages/dropped``.
    """

    max_queued_messages: int = ENVELOPE_RATE_PER_S * ENVELOPE_OUTAGE_S
    max_queued_bytes: int = 256 * 1024 * 1024
    max_inflight_messages: int = 100

    def conf_lines(self) -> list[str]:
        """The ``mosquitto.conf`` lines of these limits."""
        return [
            f"max_queued_messages {self.max_queued_messages}",
            f"max_queued_bytes {self.max_queued_bytes}",
            f"max_inflight_messages {self.max_inflight_messages}",
        ]


#: Mosquitto 2.0's ``mosquitto_passwd`` defaults: 12-byte salt, 101 iterations, SHA-512.
_SALT_BYTES = 12
_ITERATIONS = 101


@dataclass(frozen=True)
class Credentials:
    """A role's MQTT user name and password (``repr`` never shows the password)."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


@dataclass(frozen=True)
class BrokerFiles:
    """What :func:`write_broker_config` wrote."""

    conf: Path
    password_file: Path
    acl_file: Path
    credentials: Mapping[str, Path]  # a site's roles, or the central broker's users


def role_username(site_id: str, role: Role) -> str:
    """The broker user of ``role`` for a site: ``{site}-{role}``."""
    return f"{site_id}-{role}"


def mosquitto_password_hash(
    password: str, *, salt: bytes | None = None, iterations: int = _ITERATIONS
) -> str:
    """A password-file hash Mosquitto 2 accepts: ``$7$iterations$salt$hash`` (base64).

    PBKDF2-HMAC-SHA512 with a 64-byte output, as ``mosquitto_passwd`` writes it.
    """
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, 64)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def acl_rules(site_id: str) -> dict[Role, list[Rule]]:
    """Per role, the topics it may read or write (Mosquitto ``topic read|write`` lines).

    A collector publishes telemetry and statuses, its presence, the CSMS's sessions and
    answers to control, its fault events and its dead letters, and reads the CSMS requests;
    the pipeline reads telemetry, acks, asset statuses, sessions and every component's
    events (for the history) and writes analytics, forecasts, commands, the summary and its
    dead letters; control reads commands, telemetry, statuses and CSMS answers and writes
    acks, CSMS requests, its fault events and its dead letters; an integrator reads
    everything under ``gridflex/v1/``. Each writer may publish events under its own
    component only (``…/event/collect-ocpp``, ``…/event/collect-modbus``,
    ``…/event/control``).
    """
    site = f"{PREFIX}/{site_id}"
    dead = f"{PREFIX}/deadletter"
    return {
        "collector": [
            ("write", f"{site}/inverter/+/telemetry"),
            ("write", f"{site}/evse/+/telemetry"),
            ("write", f"{site}/inverter/+/status"),
            ("write", f"{site}/evse/+/status"),
            ("write", f"{site}/collector/+/status"),
            ("write", f"{site}/evse/+/session"),
            ("write", f"{site}/csms/+/result"),
            ("read", f"{site}/csms/+/setpoint"),
            ("write", f"{site}/event/collect-ocpp"),
            ("write", f"{site}/event/collect-modbus"),
            ("write", f"{dead}/modbus"),
            ("write", f"{dead}/ocpp"),
        ],
        "pipeline": [
            ("read", f"{site}/+/+/telemetry"),
            ("read", f"{site}/dispatch/+/ack"),
            ("read", f"{site}/inverter/+/status"),
            ("read", f"{site}/evse/+/status"),
            ("read", f"{site}/evse/+/session"),
            ("read", f"{site}/event/+"),
            ("write", f"{site}/grid/frequency"),
            ("write", f"{site}/ev/+/forecast"),
            ("write", f"{site}/dispatch/+/command"),
            ("write", f"{site}/summary"),
            ("read", f"{site}/target"),
            ("write", f"{dead}/pipeline"),
        ],
        "control": [
            ("read", f"{site}/+/+/telemetry"),
            ("read", f"{site}/+/+/status"),
            ("read", f"{site}/dispatch/+/command"),
            ("read", f"{site}/csms/+/result"),
            ("write", f"{site}/dispatch/+/ack"),
            ("write", f"{site}/csms/+/setpoint"),
            ("write", f"{site}/event/control"),
            ("write", f"{dead}/control"),
        ],
        "integrator": [("read", f"{PREFIX}/#")],
    }


def acl_text(site_id: str) -> str:
    """The Mosquitto ACL file for a site (anonymous clients get nothing)."""
    return users_acl_text(
        f"written by `gridflex broker-config` for site {site_id}", _site_users(site_id)
    )


def users_acl_text(header: str, users: Mapping[str, tuple[str, list[Rule]]]) -> str:
    """A Mosquitto ACL file: per ``(username, rules)`` of ``users``, what it may do."""
    lines = [f"# {header}", ""]
    for username, rules in users.values():
        lines.append(f"user {username}")
        lines += [f"topic {access} {topic}" for access, topic in rules]
        lines.append("")
    return "\n".join(lines)


def _site_users(site_id: str) -> dict[str, tuple[str, list[Rule]]]:
    """Per role: its broker user and ACL rules."""
    return {
        role: (role_username(site_id, role), rules) for role, rules in acl_rules(site_id).items()
    }


def mosquitto_conf(
    *,
    bind: str,
    port: int,
    password_file: Path,
    acl_file: Path,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    persistence_dir: Path | None = None,
    extra: str = "",
    limits: BrokerLimits | None = None,
) -> str:
    """A ``mosquitto.conf``: one listener (TLS when cert and key are given), no anonymous."""
    lines = [
        "# written by gridflex: one user per role, see the acl file",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {password_file}",
        f"acl_file {acl_file}",
        *(limits or BrokerLimits()).conf_lines(),
        "max_keepalive 600",
        f"max_packet_size {DEFAULT_MAX_PACKET_SIZE}",  # the clients' own limit
        "set_tcp_nodelay true",
    ]
    if persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {persistence_dir}/"]
    else:
        lines.append("persistence false")
    lines += ["log_dest stderr", "log_type error", "log_type warning", ""]
    lines.append(f"listener {port} {bind}")
    if tls_cert is not None and tls_key is not None:
        lines += [f"certfile {tls_cert}", f"keyfile {tls_key}", "tls_version tlsv1.2"]
    return "\n".join(lines) + "\n" + extra


def bridge_conf(
    site_id: str,
    central_url: str,
    *,
    credentials: Credentials | None = None,
    cafile: Path | None = None,
) -> str:
    """The bridge section of a site broker towards the central broker.

    Out: ``gridflex/v1/{site}/summary`` (QoS 1, retained as published); in:
    ``gridflex/v1/{site}/target``. Nothing else crosses: telemetry, commands and acks stay
    on the site. The bridge keeps a persistent session (``cleansession false``), so a
    target published while the link was down arrives when it comes back.
    """
    url = urlsplit(central_url)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        raise ConfigError(f"--central-url {central_url!r}: expected mqtt[s]://host:port")
    tls = url.scheme == "mqtts"
    port = url.port or (8883 if tls else 1883)
    site = f"{PREFIX}/{site_id}"
    lines = [
        "",
        "# bridge to the central broker (gridflex central): summary out, target in",
        f"connection gridflex-{site_id}-central",
        f"address {url.hostname}:{port}",
        f"remote_clientid gridflex-bridge-{site_id}",
        "bridge_protocol_version mqttv311",
        "cleansession false",
        "try_private false",
        "notifications false",
        "restart_timeout 2 30",
        f"topic {site}/summary out 1",
        f"topic {site}/target in 1",
    ]
    if credentials is not None:
        lines += [
            f"remote_username {credentials.username}",
            f"remote_password {credentials.password}",
        ]
    if tls:
        if cafile is not None:
            lines.append(f"bridge_cafile {cafile.resolve()}")
        else:
            lines.append("bridge_capath /etc/ssl/certs")
        lines.append("bridge_tls_version tlsv1.2")
    return "\n".join(lines) + "\n"


def _credentials_toml(site_id: str, role: str, creds: Credentials) -> str:
    return (
        f"# MQTT credentials of the {role} role of site {site_id}, written by "
        "`gridflex broker-config`.\n# Give it to the process with "
        "GRIDFLEX_MQTT_CREDENTIALS=<this file>; keep it mode 600.\n"
        f'username = "{creds.username}"\npassword = "{creds.password}"\n'
    )


def read_credentials(path: Path) -> Credentials:
    """A role's credentials file; ``PrivateFileError`` when others may read it or it is bad."""
    check_private_file(path, "credentials file")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
        return Credentials(str(doc["username"]), str(doc["password"]))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError):
        raise PrivateFileError(f"{path}: expected a TOML file with username and password") from None


def _existing(path: Path) -> Credentials | None:
    if not path.exists():
        return None
    check_private_file(path, "credentials file")
    try:
        return read_credentials(path)
    except PrivateFileError:
        return None  # unreadable: a new password replaces it


def write_broker_config(
    site_id: str,
    out_dir: Path,
    *,
    bind: str,
    port: int,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    persistence_dir: Path | None = None,
    rotate: bool = False,
    extra_conf: str = "",
    limits: BrokerLimits | None = None,
    bridge: str = "",
) -> BrokerFiles:
    """Write conf, password file, ACL and per-role credentials into ``out_dir``.

    ``bridge`` (:func:`bridge_conf`) goes at the end of ``mosquitto.conf``, after
    ``extra_conf``; with a remote password the file is written mode 0600.

    Keeps the passwords of existing credential files unless ``rotate``. Raises
    ``PrivateFileError`` for a TLS key (or an existing credentials file) that group or
    others may read.
    """
    return write_users_config(
        out_dir,
        _site_users(site_id),
        acl_header=f"written by `gridflex broker-config` for site {site_id}",
        credentials_text=lambda role, creds: _credentials_toml(site_id, role, creds),
        bind=bind,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        persistence_dir=persistence_dir,
        rotate=rotate,
        extra_conf=extra_conf,
        limits=limits,
        bridge=bridge,
    )


def write_users_config(
    out_dir: Path,
    users: Mapping[str, tuple[str, list[Rule]]],
    *,
    acl_header: str,
    credentials_text: Callable[[str, Credentials], str],
    bind: str,
    port: int,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    persistence_dir: Path | None = None,
    rotate: bool = False,
    extra_conf: str = "",
    limits: BrokerLimits | None = None,
    bridge: str = "",
) -> BrokerFiles:
    """Write a broker's conf, password file, ACL and ``credentials/{name}.toml`` per user.

    ``users`` maps a credentials name to its broker user and ACL rules (a site's roles, or
    the central broker's users); ``credentials_text`` makes a credentials file's text.
    The rest as :func:`write_broker_config`, which is this for a site.
    """
    if tls_key is not None:
        check_private_file(tls_key, "TLS private key")
    out_dir.mkdir(parents=True, exist_ok=True)
    cred_dir = out_dir / "credentials"
    cred_dir.mkdir(mode=0o700, exist_ok=True)
    cred_dir.chmod(0o700)
    paths: dict[str, Path] = {}
    hashes: list[str] = []
    for name, (username, _rules) in users.items():
        path = cred_dir / f"{name}.toml"
        creds = None if rotate else _existing(path)
        if creds is None or creds.username != username:
            creds = Credentials(username, secrets.token_urlsafe(24))
            write_private(path, credentials_text(name, creds))
        paths[name] = path
        hashes.append(f"{creds.username}:{mosquitto_password_hash(creds.password)}")
    password_file = out_dir / "passwd"
    write_private(password_file, "\n".join(hashes) + "\n")
    acl_file = out_dir / "acl"
    write_private(acl_file, users_acl_text(acl_header, users))
    conf = out_dir / "mosquitto.conf"
    text = (
        mosquitto_conf(
            bind=bind,
            port=port,
            password_file=password_file.resolve(),
            acl_file=acl_file.resolve(),
            tls_cert=tls_cert.resolve() if tls_cert else None,
            tls_key=tls_key.resolve() if tls_key else None,
            persistence_dir=persistence_dir.resolve() if persistence_dir else None,
            extra=extra_conf,
            limits=limits,
        )
        + bridge
    )
    if "remote_password" in bridge:
        write_private(conf, text)  # the bridge's password to the central
    else:
        conf.write_text(text, encoding="utf-8")
    return BrokerFiles(conf, password_file, acl_file, paths)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gridflex broker-config``."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--site", type=Path, help="the site file (TOML)")
    which.add_argument(
        "--central",
        type=Path,
        help="a central.toml: the central broker's users (gridflex central, a bridge per "
        "site, an integrator) instead of a site's",
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write the files to")
    parser.add_argument(
        "--bind",
        default=None,
        help="address the listener binds to (default: the host of [mqtt] url)",
    )
    parser.add_argument(
        "--tls-cert", type=Path, default=None, help="broker certificate (PEM) for mqtts://"
    )
    parser.add_argument(
        "--tls-key", type=Path, default=None, help="broker private key (PEM, mode 600)"
    )
    parser.add_argument(
        "--persistence-dir",
        type=Path,
        default=None,
        help="where Mosquitto keeps sessions and queued messages (default: none)",
    )
    parser.add_argument(
        "--rotate", action="store_true", help="new passwords for every role (default: keep)"
    )
    parser.add_argument(
        "--central-url",
        default=None,
        help="bridge to this central broker (mqtt[s]://host:port): summary out, target in",
    )
    parser.add_argument(
        "--central-credentials",
        type=Path,
        default=None,
        help="the bridge's user on the central broker (TOML: username, password; mode 600)",
    )
    parser.add_argument(
        "--central-cafile", type=Path, default=None, help="CA of an mqtts:// central broker"
    )


def main(args: argparse.Namespace) -> int:
    """Write the broker configuration of a site; 2 on a config or key-file error."""
    if args.central is not None:
        return _main_central(args)
    site = load_site(args.site)
    url = urlsplit(site.mqtt.url)
    tls = url.scheme == "mqtts"
    if tls and (args.tls_cert is None or args.tls_key is None):
        raise ConfigError(
            f"config error in {args.site}: mqtt.url: {site.mqtt.url} is a TLS URL: "
            "give --tls-cert and --tls-key"
        )
    if not tls and (args.tls_cert is not None or args.tls_key is not None):
        log.warning("--tls-cert/--tls-key ignored: [mqtt] url is mqtt:// (plain TCP)")
    try:
        bridge = ""
        if args.central_url:
            creds = read_credentials(args.central_credentials) if args.central_credentials else None
            bridge = bridge_conf(
                site.id, args.central_url, credentials=creds, cafile=args.central_cafile
            )
        files = write_broker_config(
            site.id,
            args.out,
            bind=args.bind or url.hostname or "127.0.0.1",
            port=url.port or (8883 if tls else 1883),
            tls_cert=args.tls_cert if tls else None,
            tls_key=args.tls_key if tls else None,
            persistence_dir=args.persistence_dir,
            rotate=args.rotate,
            bridge=bridge,
        )
    except PrivateFileError as exc:
        log.error("%s", exc)
        return 2
    log.info("wrote %s, %s and %s", files.conf, files.password_file, files.acl_file)
    for role, path in files.credentials.items():
        log.info("%s credentials: GRIDFLEX_MQTT_CREDENTIALS=%s", role, path)
    return 0


def _main_central(args: argparse.Namespace) -> int:
    """``--central``: the central broker's configuration (:mod:`gridflex.central_broker`)."""
    from gridflex.central import load_central
    from gridflex.central_broker import write_central_broker_config

    config = load_central(args.central)
    url = urlsplit(config.mqtt.url)
    tls = url.scheme == "mqtts"
    if tls and (args.tls_cert is None or args.tls_key is None):
        raise ConfigError(
            f"config error in {args.central}: mqtt.url: {config.mqtt.url} is a TLS URL: "
            "give --tls-cert and --tls-key"
        )
    try:
        files = write_central_broker_config(
            config.central.id,
            list(config.central.sites),
            args.out,
            bind=args.bind or url.hostname or "127.0.0.1",
            port=url.port or (8883 if tls else 1883),
            tls_cert=args.tls_cert if tls else None,
            tls_key=args.tls_key if tls else None,
            persistence_dir=args.persistence_dir,
            rotate=args.rotate,
        )
    except PrivateFileError as exc:
        log.error("%s", exc)
        return 2
    log.info("wrote %s", files.conf)
    for name, path in files.credentials.items():
        log.info("%s credentials: %s", name, path)
    return 0
