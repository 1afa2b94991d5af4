"""Test helpers for the REST API: a fake ControlApi, profile bodies, a self-signed cert."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from control.api import StreamHub, Subscription
from gridflex.contract import DispatchAck

SITE = "depot-1"
TOKEN = "test-token-0123456789abcdef"
T0_MS = 1_780_000_000_000  # 2026-05-28T20:26:40Z


def iso(ms: int) -> str:
    """An epoch-ms instant as RFC 3339 with Z."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


def profile_body(**changes: Any) -> dict[str, Any]:
    """A valid charge profile for inv-001, valid for one hour from T0, with ``changes``."""
    body: dict[str, Any] = {
        "asset": "inv-001",
        "profile_id": "p-1",
        "valid_from": iso(T0_MS),
        "valid_to": iso(T0_MS + 3_600_000),
        "max_charge_kw": 5.0,
        "max_discharge_kw": 3.0,
        "soc_min_pct": 20.0,
        "soc_max_pct": 80.0,
    }
    body.update(changes)
    return body


@dataclass
class FakeControl:
    """A ControlApi that records every call; ``preload`` is what each new stream starts with."""

    site_id: str = SITE
    assets: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "inv-001": {"kind": "inverter", "faults": ["ground_fault"], "telemetry": None},
            "cs-001": {"kind": "evse", "faults": [], "telemetry": None},
        }
    )
    mqtt_connected: bool = True
    hub: StreamHub = field(default_factory=StreamHub)
    preload: list[tuple[str, bytes]] = field(default_factory=list)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    acks: dict[str, DispatchAck] = field(default_factory=dict)
    manual: set[str] = field(default_factory=set)

    def asset_ids(self) -> list[str]:
        return list(self.assets)

    def asset_view(self, asset_id: str) -> dict[str, Any] | None:
        return self.assets.get(asset_id)

    async def manual_dispatch(
        self, asset_id: str, setpoint_w: float, transaction_id: str, valid_for_s: float
    ) -> DispatchAck:
        self.calls.append(("manual_dispatch", (asset_id, setpoint_w, transaction_id, valid_for_s)))
        if transaction_id not in self.acks:  # the first answer, as the ledger would keep it
            self.acks[transaction_id] = DispatchAck(
                site=self.site_id,
                asset=asset_id,
                ts_ms=T0_MS + len(self.calls),
                seq=0,
                command_id=f"manual:{transaction_id}",
                result="clamped",
                reason="clamped by rating",
                requested_w=setpoint_w,
                applied_w=max(setpoint_w, -3000.0),
                readback_w=max(setpoint_w, -3000.0),
                rules=["rating"],
                issued_ms=T0_MS,
            )
        self.manual.add(asset_id)
        return self.acks[transaction_id]

    async def cancel_manual(self, asset_id: str) -> bool:
        self.calls.append(("cancel_manual", asset_id))
        if asset_id in self.manual:
            self.manual.discard(asset_id)
            return True
        return False

    async def clear_fault(self, asset_id: str) -> list[str]:
        self.calls.append(("clear_fault", asset_id))
        cleared = list(self.assets[asset_id]["faults"])
        self.assets[asset_id]["faults"] = []
        return cleared

    async def profile_changed(self, asset_id: str) -> None:
        self.calls.append(("profile_changed", asset_id))

    def health(self) -> dict[str, Any]:
        return {"mqtt_connected": self.mqtt_connected, "assets": len(self.assets)}

    def stream(self) -> Subscription:
        sub = self.hub.subscribe()
        for message in self.preload:
            sub.queue.put_nowait(message)
        return sub


def self_signed_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "api.pem", folder / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path
