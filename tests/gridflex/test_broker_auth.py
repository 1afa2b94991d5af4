"""A real Mosquitto run with ``gridflex broker-config``'s users, ACL and TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gridflex.broker import Broker, BrokerAuth, find_mosquitto, start_broker
from gridflex.broker_config import ROLES, Role, acl_rules
from gridflex.mqtt import MqttClient
from tests.mqtt_helpers import connack_code

SITE = "auth-site"

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="needs mosquitto")


def _creds(broker: Broker, role: Role) -> tuple[str, str]:
    doc = tomllib.loads(broker.credentials[role].read_text(encoding="utf-8"))
    return doc["username"], doc["password"]


class _Client:
    """An MqttClient logged in as a role that records what it receives."""

    def __init__(self, broker: Broker, role: Role, filters: tuple[str, ...] = ()) -> None:
        username, password = _creds(broker, role)
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self.mqtt = MqttClient(
            broker.url,
            f"test-{role}-{uuid.uuid4().hex[:8]}",
            username=username,
            password=password,
            clean_session=True,
        )
        for topic_filter in filters:
            self.mqtt.subscribe(topic_filter, self._on_message)
        self.mqtt.start()
        assert self.mqtt.wait_connected(10), f"{role} could not log in"
        time.sleep(0.1)  # let the SUBACKs arrive before anyone publishes

    def _on_message(self, topic: str, payload: bytes) -> None:
        with self._cond:
            self.messages.append((topic, payload))
            self._cond.notify_all()

    def got(self, payload: bytes) -> bool:
        with self._cond:
            return any(p == payload for _t, p in self.messages)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.2))
        return True

    def close(self) -> None:
        self.mqtt.stop(flush_timeout_s=1.0)


def _concrete(topic_filter: str) -> str:
    return topic_filter.replace("+", "a1").replace("#", "x/y")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Mosquitto with one user per role and the ACL, anonymous refused."""
    broker = start_broker(auth=BrokerAuth(SITE, tmp_path_factory.mktemp("broker")))
    yield broker
    broker.stop()


def test_each_role_logs_in_and_anonymous_or_wrong_password_is_refused(secured: Broker) -> None:
    for role in ROLES:
        username, password = _creds(secured, role)
        assert connack_code(secured.url, username, password) == 0, role
        assert connack_code(secured.url, username, password + "x") != 0, role
    assert connack_code(secured.url, None, None) != 0
    assert connack_code(secured.url, "nobody", "secret-secret") != 0


def test_every_role_can_write_and_read_what_its_acl_grants(secured: Broker) -> None:
    rules = acl_rules(SITE)
    readers = {
        role: _Client(secured, role, tuple(t for a, t in rules[role] if a == "read"))
        for role in ROLES
    }
    writers = {role: _Client(secured, role) for role in ROLES}
    try:
        for role, role_rules in rules.items():
            for access, topic_filter in role_rules:
                if access != "write":
                    continue
                topic = _concrete(topic_filter)
                payload = f"{role} writes {topic}".encode()
                writers[role].mqtt.publish(topic, payload, qos=1)
                # the integrator reads everything: what a role may write arrives
                assert readers["integrator"].wait_for(
                    lambda p=payload: readers["integrator"].got(p)
                ), payload
                for reader_role, reader_rules in rules.items():
                    grants = [
                        f
                        for a, f in reader_rules
                        if a == "read" and paho.topic_matches_sub(f, topic)
                    ]
                    if grants and reader_role != "integrator":
                        reader = readers[reader_role]
                        assert reader.wait_for(lambda p=payload, r=reader: r.got(p)), (
                            f"{reader_role} should read {topic}"
                        )
    finally:
        for client in (*readers.values(), *writers.values()):
            client.close()


@pytest.mark.parametrize(
    ("role", "forbidden", "allowed"),
    [
        ("collector", "dispatch/a1/command", "inverter/a1/telemetry"),
        ("collector", "summary", "evse/a1/status"),
        ("pipeline", "inverter/a1/telemetry", "dispatch/a1/command"),
        ("control", "dispatch/a1/command", "dispatch/a1/ack"),
        ("control", "event/collect-ocpp", "event/control"),  # events under its own name only
        ("collector", "event/control", "event/collect-ocpp"),
        ("pipeline", "event/control", "dispatch/a1/command"),
        ("integrator", "dispatch/a1/command", None),
    ],
)
def test_a_publish_outside_the_acl_never_reaches_a_subscriber(
    secured: Broker, role: Role, forbidden: str, allowed: str | None
) -> None:
    prefix = f"gridflex/v1/{SITE}"
    watcher = _Client(secured, "integrator", ("gridflex/v1/#",))
    client = _Client(secured, role)
    marker_client = client if allowed is not None else _Client(secured, "pipeline")
    marker_topic = f"{prefix}/{allowed or 'summary'}"
    try:
        client.mqtt.publish(f"{prefix}/{forbidden}", b"forbidden", qos=1)
        assert client.mqtt.flush(10)
        # Mosquitto routes one client's messages in order: once the allowed marker sent
        # after the forbidden message arrives, the forbidden one would have arrived first.
        marker_client.mqtt.publish(marker_topic, b"marker", qos=1)
        assert watcher.wait_for(lambda: watcher.got(b"marker"))
        assert not watcher.got(b"forbidden")
    finally:
        for c in {id(x): x for x in (watcher, client, marker_client)}.values():
            c.close()


def test_a_subscription_outside_the_acl_delivers_nothing(secured: Broker) -> None:
    prefix = f"gridflex/v1/{SITE}"
    # The collector may read CSMS requests but not telemetry nor commands.
    collector = _Client(
        secured,
        "collector",
        (f"{prefix}/+/+/telemetry", f"{prefix}/dispatch/+/command", f"{prefix}/csms/+/setpoint"),
    )
    watcher = _Client(secured, "integrator", ("gridflex/v1/#",))
    producer = _Client(secured, "collector")
    pipeline = _Client(secured, "pipeline")
    control = _Client(secured, "control")
    try:
        producer.mqtt.publish(f"{prefix}/inverter/a1/telemetry", b"telemetry", qos=1)
        pipeline.mqtt.publish(f"{prefix}/dispatch/a1/command", b"command", qos=1)
        assert watcher.wait_for(lambda: watcher.got(b"telemetry") and watcher.got(b"command"))
        # Routed after the two above: it reaches the collector after them, had they been sent.
        control.mqtt.publish(f"{prefix}/csms/a1/setpoint", b"setpoint", qos=1)
        assert collector.wait_for(lambda: collector.got(b"setpoint"))
        assert not collector.got(b"telemetry")
        assert not collector.got(b"command")
    finally:
        for c in (collector, watcher, producer, pipeline, control):
            c.close()


def _self_signed_ca_and_server(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gridflex test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def test_tls_listener_serves_mqtts_with_a_private_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, cert, key = _self_signed_ca_and_server(tmp_path)
    broker = start_broker(auth=BrokerAuth(SITE, tmp_path / "broker", tls_cert=cert, tls_key=key))
    try:
        assert broker.url.startswith("mqtts://")
        username, password = _creds(broker, "collector")
        assert connack_code(broker.url, username, password, ca=str(ca)) == 0
        assert connack_code(broker.url, username, "wrong-password", ca=str(ca)) != 0
        # The project's own client trusts a private CA through SSL_CERT_FILE.
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        watcher = _Client(broker, "integrator", ("gridflex/v1/#",))
        collector = _Client(broker, "collector")
        try:
            collector.mqtt.publish(f"gridflex/v1/{SITE}/inverter/a1/telemetry", b"over tls")
            assert watcher.wait_for(lambda: watcher.got(b"over tls"))
        finally:
            collector.close()
            watcher.close()
    finally:
        broker.stop()


def test_tls_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    _ca, cert, key = _self_signed_ca_and_server(tmp_path)
    key.chmod(0o640)
    with pytest.raises(ValueError, match="chmod 600"):
        start_broker(auth=BrokerAuth(SITE, tmp_path / "broker", tls_cert=cert, tls_key=key))


def test_pipeline_shared_subscription_is_granted_by_the_acl(secured: Broker) -> None:
    prefix = f"gridflex/v1/{SITE}"
    # Several pipeline partitions subscribe through $share (gridflex.mqtt.plain_filter).
    pipeline = _Client(secured, "pipeline", (f"$share/g/{prefix}/+/+/telemetry",))
    collector = _Client(secured, "collector")
    try:
        collector.mqtt.publish(f"{prefix}/evse/a1/telemetry", b"shared", qos=1)
        assert pipeline.wait_for(lambda: pipeline.got(b"shared"))
    finally:
        pipeline.close()
        collector.close()
