"""The CSMS over real WebSockets on loopback, with simulated stations and a real Mosquitto."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import os
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from collectors.ocpp.csms import Csms, CsmsSettings, StationConfig, collector_will
from collectors.ocpp.security import KeyFileError
from gridflex.broker import Broker
from gridflex.contract import parse_payload
from gridflex.mqtt import MqttClient
from gridflex.net import free_port
from simulators.charger.fleet import Faults, StationSpec
from simulators.charger.station import SimStation
from simulators.ev import CarSpec, ThermalSpec
from tests.loop_helpers import LoopThread
from tests.mqtt_helpers import Subscriber

pytestmark = pytest.mark.integration

PASSWORD = "station-password-0123"
V2X_CAR = CarSpec(max_charge_w=11_000, max_discharge_w=7_000, v2x=True, initial_soc_pct=50)
CHARGE_ONLY = CarSpec(max_charge_w=11_000, v2x=False, initial_soc_pct=50)


class Site:
    """A CSMS for some stations, publishing to MQTT, and the simulated stations themselves."""

    def __init__(
        self,
        lt: LoopThread,
        mqtt_url: str,
        specs: list[StationSpec],
        *,
        max_discharge_w: float = 10_000,
        thermal: ThermalSpec | None = None,
        **settings: Any,
    ) -> None:
        self.lt = lt
        self.id = f"t{uuid.uuid4().hex[:8]}"
        self.specs = specs
        self.mqtt = MqttClient(
            mqtt_url, f"test-csms-{self.id}", will=collector_will(self.id), clean_session=True
        )
        self.mqtt.start()
        stations = {
            s.station_id: StationConfig.single(
                s.station_id, s.station_id, PASSWORD, 22_000, max_discharge_w
            )
            for s in specs
        }
        options: dict[str, Any] = {"port": 0, "meter_interval_s": 0.2, "response_timeout_s": 1.0}
        options.update(settings)
        self.csms = Csms(CsmsSettings(site_id=self.id, stations=stations, **options), self.mqtt)
        self.thermal = thermal
        self.stations: list[SimStation] = []
        self.stop_event: asyncio.Event | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.lt.run(self.csms.start())
        scheme = "wss" if ssl_context else "ws"
        url = f"{scheme}://127.0.0.1:{self.csms.port}/ocpp"
        self.stations = [
            SimStation(s, url, ssl_context=ssl_context, thermal=self.thermal) for s in self.specs
        ]

        async def _go() -> None:
            self.stop_event = asyncio.Event()
            self.tasks = [asyncio.create_task(st.run(self.stop_event)) for st in self.stations]

        self.lt.run(_go())

    def stop_stations(self) -> None:
        async def _stop() -> None:
            assert self.stop_event is not None
            self.stop_event.set()
            await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 10)

        self.lt.run(_stop())

    def close(self) -> None:
        if self.tasks:
            self.stop_stations()
        self.lt.run(self.csms.stop())
        self.mqtt.stop(flush_timeout_s=1.0)

    def topic(self, asset: str, leaf: str) -> str:
        return f"gridflex/v1/{self.id}/evse/{asset}/{leaf}"


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def spec(station_id: str, version: str, car: CarSpec = V2X_CAR, **faults: Any) -> StationSpec:
    return StationSpec.single(
        station_id,
        PASSWORD,
        "2.1" if version == "2.1" else "2.0.1",
        car,
        faults=Faults(**faults),
    )


def telemetry(sub: Subscriber, site: Site, asset: str) -> list[dict[str, Any]]:
    return sub.json_on(lambda t: t == site.topic(asset, "telemetry"))


def statuses(sub: Subscriber, site: Site, asset: str) -> list[dict[str, Any]]:
    return sub.json_on(lambda t: t == site.topic(asset, "status"))


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


# --------------------------------------------------------------------------- boot and report


def test_both_versions_boot_and_report_telemetry_in_the_contract(
    mosquitto: Broker, loop_thread: LoopThread
) -> None:
    site = Site(
        loop_thread, mosquitto.url, [spec("cs21", "2.1"), spec("cs201", "2.0.1", CHARGE_ONLY)]
    )
    with Subscriber(mosquitto.url, f"gridflex/v1/{site.id}/#") as sub:
        site.start()
        try:
            assert sub.wait_for(
                lambda _m: all(
                    sum(t["power_w"] > 0 for t in telemetry(sub, site, a)) >= 3
                    for a in ("cs21", "cs201")
                )
            )
        finally:
            site.close()
        for _topic, payload in sub.messages:
            parse_payload(payload)  # every message follows the contract, or this raises
        by_protocol = {
            s["capabilities"]["protocol"]: s
            for a in ("cs21", "cs201")
            for s in statuses(sub, site, a)
            if s["state"] == "online" and s.get("capabilities")
        }
        assert set(by_protocol) == {"ocpp2.1", "ocpp2.0.1"}
        assert by_protocol["ocpp2.1"]["capabilities"]["manufacturer"] == "gridflex"
        for caps in (s["capabilities"] for s in by_protocol.values()):
            assert (caps["site_max_charge_w"], caps["site_max_discharge_w"]) == (22_000, 10_000)
        with_needs = [
            s["capabilities"]
            for s in statuses(sub, site, "cs21")
            if s["reason"] == "charging needs received"
        ]
        assert (with_needs[-1]["rated_charge_w"], with_needs[-1]["rated_discharge_w"]) == (
            11_000,
            7_000,
        )  # what the car states (ISO 15118-20 via NotifyEVChargingNeeds)
        last21 = [t for t in telemetry(sub, site, "cs21") if t["power_w"] > 0][-1]
        assert last21["transaction_id"]
        assert (last21["status"], last21["device_status"]) == ("charging", "Charging")
        assert last21["soc_pct"] >= 50
        assert last21["energy_import_wh"] > 0
        assert last21["ev"]["v2x"] is True
        assert last21["ev"]["max_discharge_w"] == 7_000
        last201 = telemetry(sub, site, "cs201")[-1]
        assert last201["ev"]["v2x"] is False
        seqs = [t["seq"] for t in telemetry(sub, site, "cs21")]
        assert seqs == sorted(set(seqs))  # strictly increasing
    station = site.csms.station("cs21")
    assert station is not None and station.meter_interval_s == 0.2  # sub-second accepted


def test_station_offering_both_versions_gets_ocpp21_and_201_only_gets_201(
    loop_thread: LoopThread,
) -> None:
    site = Site(loop_thread, f"mqtt://127.0.0.1:{free_port()}", [spec("cs1", "2.1")])
    loop_thread.run(site.csms.start())
    url = f"ws://127.0.0.1:{site.csms.port}/ocpp/cs1"

    async def negotiate(offer: list[str]) -> str | None:
        async with connect(
            url, subprotocols=offer, additional_headers=basic("cs1", PASSWORD)
        ) as ws:  # type: ignore[arg-type]
            return ws.subprotocol

    try:
        assert loop_thread.run(negotiate(["ocpp2.0.1", "ocpp2.1"])) == "ocpp2.1"
        assert loop_thread.run(negotiate(["ocpp2.0.1"])) == "ocpp2.0.1"
    finally:
        site.close()


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/ocpp/nobody", basic("nobody", PASSWORD), 404),  # unknown station
        ("/ocpp/cs1", basic("cs1", "wrong-password-0123"), 401),  # wrong password
        ("/ocpp/cs1", {}, 401),  # no credentials
        ("/cs1", basic("cs2", PASSWORD), 401),  # someone else's identity
    ],
)
def test_unknown_station_and_wrong_password_are_refused(
    loop_thread: LoopThread, path: str, headers: dict[str, str], status: int
) -> None:
    site = Site(
        loop_thread, f"mqtt://127.0.0.1:{free_port()}", [spec("cs1", "2.1"), spec("cs2", "2.1")]
    )
    loop_thread.run(site.csms.start())

    async def attempt() -> int:
        url = f"ws://127.0.0.1:{site.csms.port}{path}"
        try:
            async with connect(url, subprotocols=["ocpp2.1"], additional_headers=headers):  # type: ignore[list-item]
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    try:
        assert loop_thread.run(attempt()) == status
        assert site.csms.stats.refused_connections == 1
        assert site.csms.connected_stations == []
    finally:
        site.close()


def test_client_without_an_ocpp_subprotocol_is_refused(loop_thread: LoopThread) -> None:
    site = Site(loop_thread, f"mqtt://127.0.0.1:{free_port()}", [spec("cs1", "2.1")])
    loop_thread.run(site.csms.start())

    async def attempt() -> int:
        url = f"ws://127.0.0.1:{site.csms.port}/ocpp/cs1"
        try:
            async with connect(
                url, subprotocols=["ocpp1.6"], additional_headers=basic("cs1", PASSWORD)
            ):  # type: ignore[list-item]
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    try:
        assert loop_thread.run(attempt()) == 400
    finally:
        site.close()


# --------------------------------------------------------------------------- TLS


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gridflex test CSMS")])
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
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "csms.crt", tmp_path / "csms.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def test_tls_with_basic_auth_boots_a_station(
    mosquitto: Broker, loop_thread: LoopThread, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    site = Site(
        loop_thread,
        mosquitto.url,
        [spec("tls1", "2.1")],
        security_profile=2,
        tls_cert=cert,
        tls_key=key,
    )
    client_ssl = ssl.create_default_context(cafile=str(cert))
    with Subscriber(mosquitto.url, f"gridflex/v1/{site.id}/#") as sub:
        site.start(ssl_context=client_ssl)
        try:
            assert sub.wait_for(lambda _m: len(telemetry(sub, site, "tls1")) >= 2)
        finally:
            site.close()
    assert any(s["reason"] == "booted" for s in statuses(sub, site, "tls1"))


def test_private_key_readable_by_others_is_refused_at_start(
    loop_thread: LoopThread, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    os.chmod(key, 0o644)
    site = Site(
        loop_thread,
        f"mqtt://127.0.0.1:{free_port()}",
        [spec("tls1", "2.1")],
        security_profile=2,
        tls_cert=cert,
        tls_key=key,
    )
    try:
        with pytest.raises(KeyFileError, match="readable by group or others"):
            loop_thread.run(site.csms.start())
    finally:
        site.mqtt.stop(flush_timeout_s=0.1)


# --------------------------------------------------------------------------- setpoints


def test_central_setpoint_of_minus_5000_makes_the_car_discharge(
    mosquitto: Broker, loop_thread: LoopThread
) -> None:
    site = Site(loop_thread, mosquitto.url, [spec("v2x", "2.1")])
    with Subscriber(mosquitto.url, f"gridflex/v1/{site.id}/#") as sub:
        site.start()
        try:
            assert sub.wait_for(lambda _m: any(t.get("ev") for t in telemetry(sub, site, "v2x")))
            result = loop_thread.run(site.csms.set_power("v2x", -5_000))
            assert result.status == "accepted", result
            assert result.operation_mode == "CentralSetpoint"
            assert sub.wait_for(
                lambda _m: sum(t["power_w"] == -5_000 for t in telemetry(sub, site, "v2x")) >= 3
            )
        finally:
            site.close()
    discharging = [t for t in telemetry(sub, site, "v2x") if t["power_w"] == -5_000]
    assert discharging[-1]["energy_export_wh"] > discharging[0]["energy_export_wh"]
    assert discharging[-1]["soc_pct"] <= discharging[0]["soc_pct"]
    assert discharging[-1]["setpoint_w"] == -5_000
    profile = site.stations[0].received_profiles[-1]
    period = profile["charging_schedule"][0]["charging_schedule_period"][0]
    assert period["operation_mode"] == "CentralSetpoint"
    assert period["discharge_limit"] == -7_000  # min(site 10 kW, car 7 kW)


def test_201_station_is_never_sent_a_discharge(mosquitto: Broker, loop_thread: LoopThread) -> None:
    site = Site(
        loop_thread, mosquitto.url, [spec("old", "2.0.1"), spec("iso2", "2.1", CHARGE_ONLY)]
    )
    with Subscriber(mosquitto.url, f"gridflex/v1/{site.id}/#") as sub:
        site.start()
        try:
            assert sub.wait_for(
                lambda _m: all(
                    any(t.get("ev") for t in telemetry(sub, site, a)) for a in ("old", "iso2")
                )
            )
            refused = loop_thread.run(site.csms.set_power("old", -5_000))
            refused_iso2 = loop_thread.run(site.csms.set_power("iso2", -5_000))
            charge = loop_thread.run(site.csms.set_power("old", 3_000))
            assert sub.wait_for(
                lambda _m: sum(t["power_w"] == 3_000 for t in telemetry(sub, site, "old")) >= 2
            )
        finally:
            site.close()
    assert refused.status == "refused" and "2.0.1" in (refused.reason or "")
    assert refused_iso2.status == "refused" and "charge-only" in (refused_iso2.reason or "")
    assert charge.status == "accepted" and charge.operation_mode == "Limit"
    old, iso2 = site.stations
    assert iso2.received_profiles == []
    limits = [
        p["charging_schedule"][0]["charging_schedule_period"][0]["limit"]
        for p in old.received_profiles
    ]
    assert limits == [3_000]
    assert all(t["power_w"] >= 0 for t in telemetry(sub, site, "old"))


def test_hung_station_trips_the_response_timeout(loop_thread: LoopThread) -> None:
    site = Site(
        loop_thread, f"mqtt://127.0.0.1:{free_port()}", [spec("hung", "2.1", hang_after_s=0.0)]
    )
    site.start()
    try:

        async def when_charging() -> None:
            for _ in range(200):
                state = site.csms.station("hung")
                if state is not None and state.transaction_id and state.needs:
                    return
                await asyncio.sleep(0.05)

        loop_thread.run(when_charging())
        result = loop_thread.run(site.csms.set_power("hung", 1_000))
    finally:
        site.close()
    assert result.status == "timeout"
    assert site.stations[0].counters.calls_ignored >= 1


def test_setpoint_to_an_unconnected_station_reports_offline(loop_thread: LoopThread) -> None:
    site = Site(loop_thread, f"mqtt://127.0.0.1:{free_port()}", [spec("away", "2.1")])
    loop_thread.run(site.csms.start())
    try:
        assert loop_thread.run(site.csms.set_power("away", 1_000)).status == "offline"
        assert loop_thread.run(site.csms.set_power("nobody", 1_000)).status == "refused"
    finally:
        site.close()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_malformed_frame_gets_a_callerror_and_the_session_continues(
    mosquitto: Broker, loop_thread: LoopThread, version: str
) -> None:
    site = Site(loop_thread, mosquitto.url, [spec("raw", version)])
    loop_thread.run(site.csms.start())

    async def session() -> list[Any]:
        url = f"ws://127.0.0.1:{site.csms.port}/ocpp/raw"
        answers = []
        async with connect(
            url, subprotocols=[f"ocpp{version}"], additional_headers=basic("raw", PASSWORD)
        ) as ws:  # type: ignore[list-item]
            for frame in (
                "{{{ not json",
                '[2,"u1","NoSuchAction",{}]',
                '[2,"u2","BootNotification",'
                '{"reason":"PowerUp","chargingStation":{"model":7,"vendorName":"V"}}]',
                '[2,"u3","Heartbeat",{}]',
            ):
                await ws.send(frame)
                answers.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        return answers

    with Subscriber(mosquitto.url, "gridflex/v1/deadletter/ocpp") as dead:
        try:
            answers = loop_thread.run(session())
            assert dead.wait_for(lambda m: len(m) >= 3)
        finally:
            site.close()
    assert answers[0][:3] == [4, "-1", "RpcFrameworkError"]
    assert answers[1][:3] == [4, "u1", "NotImplemented"]
    assert answers[2][:3] == [4, "u2", "TypeConstraintViolation"]
    assert answers[3][0:2] == [3, "u3"]
    assert answers[3][2]["currentTime"].endswith("Z")
    letters = [parse_payload(p) for _t, p in dead.messages]
    assert all("raw" in letter.reason for letter in letters)  # type: ignore[attr-defined]


def test_ground_fault_shows_in_status_and_telemetry(
    mosquitto: Broker, loop_thread: LoopThread
) -> None:
    site = Site(loop_thread, mosquitto.url, [spec("gf", "2.1", ground_fault_after_s=1.0)])
    with Subscriber(mosquitto.url, f"gridflex/v1/{site.id}/#") as sub:
        site.start()
        try:
            assert sub.wait_for(
                lambda _m: (
                    any(s["state"] == "faulted" for s in statuses(sub, site, "gf"))
                    and any(t.get("status") == "fault" for t in telemetry(sub, site, "gf"))
                )
            )
        finally:
            site.close()
    faulted = [s for s in statuses(sub, site, "gf") if s["state"] == "faulted"]
    assert "GroundFault" in faulted[-1]["faults"]
    assert faulted[-1]["online"] is True
    after = [t for t in telemetry(sub, site, "gf") if t.get("status") == "fault"]
    assert after[-1]["power_w"] == 0
    assert "transaction_id" not in after[-1]  # the transaction was stopped


def test_transaction_end_is_published_as_idle_and_in_the_retained_status(
    mosquitto: Broker, loop_thread: LoopThread
) -> None:
    car = CarSpec(max_charge_w=11_000, v2x=False, initial_soc_pct=50, departure_s=1.5)
    site = Site(loop_thread, mosquitto.url, [spec("tx", "2.0.1", car)])
    with Subscriber(mosquitto.url, f"gridflex/v1/{site.id}/#") as sub:
        site.start()
        try:
            assert sub.wait_for(
                lambda _m: any("ended" in s["reason"] for s in statuses(sub, site, "tx"))
            )
        finally:
            site.close()
    for _topic, payload in sub.messages:
        parse_payload(payload)
    readings = telemetry(sub, site, "tx")
    final = next(t for t in readings if t.get("device_status") == "Ended")
    assert final["status"] == "idle"  # not "charging": the transaction is over
    assert final["transaction_id"]  # the reading still belongs to it
    charging = [t for t in readings if t.get("status") == "charging"]
    assert charging and charging[-1]["transaction_id"] == final["transaction_id"]
    assert final["energy_import_wh"] >= charging[-1]["energy_import_wh"]
    tx_id = final["transaction_id"]
    by_reason = {s["reason"]: s for s in statuses(sub, site, "tx")}
    started = by_reason[f"transaction {tx_id} started"]
    ended = by_reason[f"transaction {tx_id} ended (EVDisconnected)"]
    assert started["transaction_id"] == tx_id
    assert "transaction_id" not in ended
    assert "rated_charge_w" not in ended["capabilities"]  # the car has gone


def test_overheating_connector_derates_power_and_reports_its_temperature(
    mosquitto: Broker, loop_thread: LoopThread
) -> None:
    fast_heat = ThermalSpec(tau_s=0.3)
    site = Site(loop_thread, mosquitto.url, [spec("hot", "2.1", overtemp=True)], thermal=fast_heat)
    with Subscriber(mosquitto.url, f"gridflex/v1/{site.id}/#") as sub:
        site.start()
        try:
            assert sub.wait_for(
                lambda _m: any(
                    t.get("temp_c", 0) > 70 and 0 < t["power_w"] < 11_000
                    for t in telemetry(sub, site, "hot")
                )
            )
        finally:
            site.close()
    hot = [t for t in telemetry(sub, site, "hot") if t.get("temp_c", 0) > 70]
    assert all(t["power_w"] < 11_000 for t in hot[1:])  # derated below the car's 11 kW
    assert statuses(sub, site, "hot")[-1]["faults"] == []  # derating is not a fault


def test_dropped_meter_values_are_counted_as_sequence_gaps(loop_thread: LoopThread) -> None:
    site = Site(
        loop_thread, f"mqtt://127.0.0.1:{free_port()}", [spec("lossy", "2.0.1", drop_rate=0.5)]
    )
    site.start()
    try:

        async def gaps() -> int:
            for _ in range(200):
                if site.csms.stats.missed_transaction_events >= 3:
                    break
                await asyncio.sleep(0.05)
            return site.csms.stats.missed_transaction_events

        missed = loop_thread.run(gaps())
    finally:
        site.close()
    assert missed >= 3
    assert site.stations[0].counters.messages_dropped >= missed


def test_disconnect_publishes_retained_offline_status(
    mosquitto: Broker, loop_thread: LoopThread
) -> None:
    site = Site(loop_thread, mosquitto.url, [spec("bye", "2.0.1")])
    with Subscriber(mosquitto.url, f"gridflex/v1/{site.id}/#") as sub:
        site.start()
        try:
            assert sub.wait_for(
                lambda _m: any(s["reason"] == "booted" for s in statuses(sub, site, "bye"))
            )
            site.stop_stations()
            site.tasks = []
            assert sub.wait_for(
                lambda _m: statuses(sub, site, "bye")[-1]["reason"] == "disconnected"
            )
        finally:
            site.close()
    with Subscriber(mosquitto.url, site.topic("bye", "status")) as late:  # retained
        assert late.wait_for(lambda m: len(m) >= 1)
        assert json.loads(late.messages[-1][1])["online"] is False


# --------------------------------------------------------------------------- broker outage


class Gate:
    """A TCP forwarder to the broker that can be closed and opened (a broker outage)."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.server: asyncio.Server | None = None

    async def open(self) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self.server = await asyncio.start_server(handle, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def test_stations_are_served_while_the_broker_is_unreachable_and_telemetry_follows(
    mosquitto: Broker, loop_thread: LoopThread
) -> None:
    gate = Gate(mosquitto.port)
    site = Site(loop_thread, f"mqtt://127.0.0.1:{gate.port}", [spec("early", "2.1")])
    with Subscriber(mosquitto.url, f"gridflex/v1/{site.id}/#") as sub:
        site.start()  # the broker is unreachable: nothing listens on the gate's port
        try:

            async def queued() -> int:
                for _ in range(200):
                    if site.csms.stats.telemetry_published >= 5:
                        break
                    await asyncio.sleep(0.05)
                return site.csms.stats.telemetry_published

            assert loop_thread.run(queued()) >= 5
            assert sub.messages == []
            loop_thread.run(gate.open())
            assert sub.wait_for(lambda _m: len(telemetry(sub, site, "early")) >= 5, timeout_s=45)
        finally:
            site.close()
            loop_thread.run(gate.close())
    seqs = [t["seq"] for t in telemetry(sub, site, "early")]
    assert seqs[0] == 1  # the first reading, queued during the outage, was not lost
