"""OCPP Security Profile 3 (client certificates) and the slow-down of failing stations."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage, InvalidStatus

from collectors.ocpp.security import FailedAuthDelay, certificate_identity
from gridflex.net import free_port
from tests.collectors.test_ocpp_csms import PASSWORD, Site, basic, loop_thread, spec
from tests.loop_helpers import LoopThread

__all__ = ["loop_thread"]  # the fixture, imported for this module's tests


# --------------------------------------------------------------------------- the delay (pure)


@pytest.mark.parametrize(
    ("failures", "delay_s"),
    [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (40, 8.0)],
)
def test_delay_doubles_per_failure_up_to_its_bound(failures: int, delay_s: float) -> None:
    delay = FailedAuthDelay(base_s=0.5, max_s=8.0)
    for _ in range(failures):
        delay.failed("cs1", "10.0.0.1", now_s=100.0)
    assert delay.delay_s("cs1", "10.0.0.1", now_s=100.0) == delay_s


def test_delay_follows_the_station_to_another_address_and_the_address_to_another_station() -> None:
    delay = FailedAuthDelay(base_s=1.0)
    delay.failed("cs1", "10.0.0.1", now_s=0.0)
    delay.failed("cs1", "10.0.0.1", now_s=0.0)
    assert delay.delay_s("cs1", "10.0.0.9", now_s=0.0) == 2.0  # same station, new address
    assert delay.delay_s("cs7", "10.0.0.1", now_s=0.0) == 2.0  # same address, other station
    assert delay.delay_s("cs7", "10.0.0.9", now_s=0.0) == 0.0


def test_success_clears_and_old_failures_are_forgotten() -> None:
    delay = FailedAuthDelay(base_s=1.0, forget_s=60.0)
    delay.failed("cs1", "10.0.0.1", now_s=0.0)
    delay.succeeded("cs1", "10.0.0.1")
    assert delay.delay_s("cs1", "10.0.0.1", now_s=0.0) == 0.0
    delay.failed("cs2", "10.0.0.2", now_s=0.0)
    assert delay.delay_s("cs2", "10.0.0.2", now_s=60.0) == 1.0
    assert delay.delay_s("cs2", "10.0.0.2", now_s=61.0) == 0.0


def test_delay_remembers_a_bounded_number_of_keys() -> None:
    delay = FailedAuthDelay(max_keys=10)
    for i in range(100):
        delay.failed(f"cs{i}", f"10.0.0.{i}", now_s=0.0)
    assert len(delay._fails) == 10
    assert delay.delay_s("cs99", None, now_s=0.0) > 0  # the newest are kept


def test_failing_station_is_answered_later_and_a_success_clears_it(
    loop_thread: LoopThread,
) -> None:
    site = Site(loop_thread, f"mqtt://127.0.0.1:{free_port()}", [spec("cs1", "2.1")])
    site.csms.auth_delay = FailedAuthDelay(base_s=0.01, max_s=0.05)
    loop_thread.run(site.csms.start())

    async def attempt(password: str) -> int:
        url = f"ws://127.0.0.1:{site.csms.port}/ocpp/cs1"
        try:
            async with connect(
                url,
                subprotocols=["ocpp2.1"],  # type: ignore[list-item]
                additional_headers=basic("cs1", password),
            ):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    try:
        codes = [loop_thread.run(attempt("a-wrong-password-000")) for _ in range(3)]
        assert codes == [401, 401, 401]
        assert site.csms.stats.delayed_refusals == 2  # the first failure is answered at once
        assert loop_thread.run(attempt(PASSWORD)) == 101
        assert site.csms.auth_delay.delay_s("cs1", "127.0.0.1", now_s=0.0) == 0.0
    finally:
        site.close()


# --------------------------------------------------------------------------- profile 3


def _cert(
    cn: str,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


def _write(
    folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> None:
    (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path = folder / f"{name}.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, the CSMS's certificate and station certificates for cs1 and cs2, all from it."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gridflex test CA")])
    ca = _cert("gridflex test CA", ca_name, ca_key, ca_key, ca=True)
    _write(tmp_path, "ca", ca, ca_key)
    for name in ("csms", "cs1", "cs2"):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(tmp_path, name, _cert(name, ca_name, ca_key, key), key)
    return tmp_path


def _client_ssl(pki: Path, station: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if station is not None:
        context.load_cert_chain(pki / f"{station}.pem", pki / f"{station}.key")
    return context


def test_profile_3_takes_the_station_identity_from_its_client_certificate(
    loop_thread: LoopThread, pki: Path
) -> None:
    site = Site(
        loop_thread,
        f"mqtt://127.0.0.1:{free_port()}",
        [spec("cs1", "2.1")],
        security_profile=3,
        tls_cert=pki / "csms.pem",
        tls_key=pki / "csms.key",
        tls_ca=pki / "ca.pem",
    )
    loop_thread.run(site.csms.start())

    async def attempt(certificate_of: str | None) -> int | str:
        url = f"wss://127.0.0.1:{site.csms.port}/ocpp/cs1"
        try:
            async with connect(
                url,
                subprotocols=["ocpp2.1"],  # type: ignore[list-item]
                ssl=_client_ssl(pki, certificate_of),
            ):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code
        except (ssl.SSLError, OSError, InvalidMessage) as exc:
            return type(exc).__name__

    try:
        assert loop_thread.run(attempt("cs1")) == 101  # no Basic auth needed
        assert loop_thread.run(attempt("cs2")) == 403  # a valid certificate of another station
        assert isinstance(loop_thread.run(attempt(None)), str)  # no certificate: no TLS
        assert site.csms.stats.connections == 1
    finally:
        site.close()


def test_certificate_identity_is_the_subject_common_name() -> None:
    peercert = {
        "subject": ((("organizationName", "Depot"),), (("commonName", "CS001"),)),
        "issuer": ((("commonName", "CA"),),),
    }
    assert certificate_identity(peercert) == "CS001"
    assert certificate_identity({"subject": ((("organizationName", "x"),),)}) is None
    assert certificate_identity(None) is None
