"""Start an MQTT broker on a free loopback port: Mosquitto when installed, else embedded amqtt.

Mosquitto is the production broker. The config written here sets the per-client queue
limits of ``gridflex.broker_config.BrokerLimits`` (Mosquitto's default of 1000 drops QoS 1
messages for a slow subscriber during bursts, NOTES.md) and keeps persistence off unless
asked (a throw-away broker).
The embedded amqtt broker is only the no-install convenience default (~4-5k msg/s).

With ``auth`` (:class:`BrokerAuth`) Mosquitto runs the configuration of ``gridflex
broker-config``: ``allow_anonymous false``, one generated user per role with its ACL, and a
TLS listener when a certificate and key are given (the demo's broker; tests that need
authentication). Without it the broker is anonymous (the tests' shared broker).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gridflex.broker_config import BrokerLimits, write_broker_config
from gridflex.net import free_port, wait_for_port

__all__ = [
    "Broker",
    "BrokerAuth",
    "anonymous_conf",
    "find_mosquitto",
    "root_conf",
    "start_broker",
    "start_mosquitto_conf",
]

log = logging.getLogger(__name__)

MOSQUITTO_CONF = """\
# written by gridflex: a loopback broker for a demo, a test or a benchmark
listener {port} {host}
allow_anonymous true
{persistence}
{limits}
max_keepalive 600
# the clients' own limit (gridflex.mqtt_wire.DEFAULT_MAX_PACKET_SIZE): a bigger message
# would stay in a persistent session and be refused again at every reconnect
max_packet_size 1048576
# no Nagle delay: a QoS 0 subscriber otherwise gets ~+10 ms per message once idle
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
"""


def anonymous_conf(
    host: str, port: int, *, persistence_dir: Path | None = None, limits: BrokerLimits | None = None
) -> str:
    """The ``mosquitto.conf`` of an anonymous loopback broker (tests, benchmarks)."""
    persistence = (
        f"persistence true\npersistence_location {persistence_dir}/"
        if persistence_dir is not None
        else "persistence false"
    )
    return MOSQUITTO_CONF.format(
        host=host,
        port=port,
        persistence=persistence,
        limits="\n".join((limits or BrokerLimits()).conf_lines()),
    )


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary (PATH, then /usr/sbin), or None."""
    for candidate in (
        shutil.which("mosquitto"),
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass(frozen=True)
class BrokerAuth:
    """Run Mosquitto with users, ACL and optionally TLS (``gridflex broker-config``).

    ``config_dir`` receives the configuration, the password file and the per-role
    credential files (``credentials/{role}.toml``, mode 0600).
    """

    site_id: str
    config_dir: Path
    tls_cert: Path | None = None
    tls_key: Path | None = None
    bridge: str = ""  # a bridge section (gridflex.broker_config.bridge_conf), or none


@dataclass
class Broker:
    """A running broker; ``stop()`` ends it (by PID for Mosquitto).

    ``credentials``: the credentials file of each role when the broker runs with
    :class:`BrokerAuth` (empty for an anonymous broker).
    """

    host: str
    port: int
    kind: Literal["mosquitto", "amqtt"]
    process: subprocess.Popen[bytes] | None = None
    tls: bool = False
    credentials: dict[str, Path] = field(default_factory=dict)
    _thread: threading.Thread | None = None
    _stop: Any = None
    _workdir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """``mqtt://host:port`` (``mqtts://`` with TLS)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the Mosquitto process (None for the embedded broker)."""
        return self.process.pid if self.process else None

    def stop(self) -> None:
        """Stop the broker and remove its working folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._stop is not None:
            self._stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _start_mosquitto(
    binary: str,
    host: str,
    port: int,
    persistence_dir: Path | None,
    auth: BrokerAuth | None,
    *,
    limits: BrokerLimits | None,
) -> Broker:
    workdir = tempfile.TemporaryDirectory(prefix="gridflex-mosquitto-")
    # Started as root, Mosquitto would switch to the `mosquitto` user and could not read
    # our files or write its persistence file into our folder; stay the user that started it.
    as_root = "user root\n" if os.geteuid() == 0 else ""
    credentials: dict[str, Path] = {}
    if auth is not None:
        files = write_broker_config(
            auth.site_id,
            auth.config_dir,
            bind=host,
            port=port,
            tls_cert=auth.tls_cert,
            tls_key=auth.tls_key,
            persistence_dir=persistence_dir,
            extra_conf=as_root,
            limits=limits,
            bridge=auth.bridge,
        )
        conf = files.conf
        credentials = dict(files.credentials)
    else:
        conf = Path(workdir.name) / "mosquitto.conf"
        text = anonymous_conf(host, port, persistence_dir=persistence_dir, limits=limits)
        conf.write_text(text + as_root, encoding="utf-8")
    proc = subprocess.Popen(
        [binary, "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    tls = auth is not None and auth.tls_cert is not None and auth.tls_key is not None
    broker = Broker(
        host, port, "mosquitto", process=proc, tls=tls, credentials=credentials, _workdir=workdir
    )
    if not wait_for_port(host, port, timeout_s=10):
        broker.stop()
        raise RuntimeError(f"mosquitto did not start listening on {host}:{port}")
    log.info(
        "mosquitto (pid %d) listening on %s:%d%s",
        proc.pid,
        host,
        port,
        " (users and ACL)" if auth is not None else "",
    )
    return broker


def root_conf() -> str:
    """``user root`` when running as root (Mosquitto would switch to its own user), else ""."""
    return "user root\n" if os.geteuid() == 0 else ""


def start_mosquitto_conf(conf: Path, host: str, port: int) -> Broker:
    """Run Mosquitto on a configuration written elsewhere (the central broker's, say).

    ``conf`` listens on ``host:port``; it includes :func:`root_conf` when needed.
    """
    binary = find_mosquitto()
    if binary is None:
        raise RuntimeError("needs Mosquitto (apt-get install mosquitto)")
    proc = subprocess.Popen(
        [binary, "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    broker = Broker(host, port, "mosquitto", process=proc)
    if not wait_for_port(host, port, timeout_s=10):
        broker.stop()
        raise RuntimeError(f"mosquitto did not start listening on {host}:{port}")
    log.info("mosquitto (pid %d) listening on %s:%d (%s)", proc.pid, host, port, conf)
    return broker


def _start_amqtt(host: str, port: int) -> Broker:
    from amqtt.broker import Broker as AmqttBroker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    ready = threading.Event()
    state: dict[str, Any] = {}

    def _run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        state["loop"] = loop

        async def _main() -> None:
            broker = AmqttBroker(config)
            await broker.start()
            state["stop_event"] = asyncio.Event()
            ready.set()
            await state["stop_event"].wait()
            await broker.shutdown()

        try:
            loop.run_until_complete(_main())
        except Exception as exc:  # reported to the starting thread below
            state["error"] = exc
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=_run, name="amqtt-broker", daemon=True)
    thread.start()
    if not ready.wait(15) or "error" in state:
        raise RuntimeError(f"embedded MQTT broker failed to start: {state.get('error')}")

    def _stop() -> None:
        loop = state["loop"]
        if not loop.is_closed():
            loop.call_soon_threadsafe(state["stop_event"].set)

    log.info(
        "embedded amqtt broker listening on %s:%d (install mosquitto for production)", host, port
    )
    return Broker(host, port, "amqtt", _thread=thread, _stop=_stop)


def start_broker(
    prefer: Literal["mosquitto", "amqtt"] = "mosquitto",
    host: str = "127.0.0.1",
    port: int | None = None,
    persistence_dir: Path | None = None,
    auth: BrokerAuth | None = None,
    *,
    limits: BrokerLimits | None = None,
) -> Broker:
    """Start a broker on ``host`` (a free port unless given) and return once it listens.

    ``persistence_dir`` (Mosquitto only) keeps sessions and queued messages across a
    restart of the broker on the same port. ``auth`` runs Mosquitto without anonymous
    access (see :class:`BrokerAuth`); it needs Mosquitto (``RuntimeError`` otherwise).
    ``limits`` replaces the per-client queue limits (default ``BrokerLimits()``; Mosquitto
    only).
    """
    port = port or free_port(host)
    binary = find_mosquitto() if prefer == "mosquitto" or auth is not None else None
    if binary:
        return _start_mosquitto(binary, host, port, persistence_dir, auth, limits=limits)
    if auth is not None:
        raise RuntimeError(
            "a broker with users and ACL needs Mosquitto (apt-get install mosquitto)"
        )
    return _start_amqtt(host, port)
