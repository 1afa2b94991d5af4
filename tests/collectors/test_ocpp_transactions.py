"""Charging sessions from TransactionEvent: the CSMS's bookkeeping, then over real sockets."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from collectors.ocpp.transactions import TransactionLog
from gridflex.broker import Broker
from gridflex.contract import ChargingSession, parse_payload, session_topic
from simulators.ev import CarSpec
from tests.collectors.test_ocpp_csms import Site, loop_thread, spec
from tests.loop_helpers import LoopThread
from tests.mqtt_helpers import Subscriber

__all__ = ["loop_thread"]  # the fixture, imported for this module's tests


def event(
    kind: str,
    ts: str,
    *,
    tx: str = "tx1",
    import_wh: float | None = None,
    soc: float | None = None,
    token: dict[str, str] | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    sampled = []
    if import_wh is not None:
        sampled.append({"measurand": "Energy.Active.Import.Register", "value": import_wh})
    if soc is not None:
        sampled.append({"measurand": "SoC", "value": soc, "unitOfMeasure": {"unit": "Percent"}})
    info: dict[str, Any] = {"transactionId": tx}
    if reason:
        info["stoppedReason"] = reason
    payload: dict[str, Any] = {
        "eventType": kind,
        "timestamp": ts,
        "triggerReason": "MeterValuePeriodic",
        "seqNo": 0,
        "transactionInfo": info,
    }
    if sampled:
        payload["meterValue"] = [{"timestamp": ts, "sampledValue": sampled}]
    if token:
        payload["idToken"] = token
    return payload


def test_a_transaction_is_published_when_it_starts_and_when_it_ends_with_its_registers() -> None:
    log = TransactionLog("s1")
    token = {"idToken": "04A2B3C4D5E6F7", "type": "ISO14443"}
    (started,) = log.on_event(
        "evse-1",
        event("Started", "2026-11-30T10:00:00Z", import_wh=1000, soc=20, token=token),
        now_ms=1,
    )
    assert (
        log.on_event("evse-1", event("Updated", "2026-11-30T10:30:00Z", import_wh=6000), now_ms=2)
        == []
    )
    (ended,) = log.on_event(
        "evse-1",
        event("Ended", "2026-11-30T11:00:00Z", import_wh=11_000, soc=80, reason="EVDisconnected"),
        now_ms=3,
    )
    expected_hash = hashlib.sha256(b"ISO14443:04A2B3C4D5E6F7").hexdigest()
    assert started == ChargingSession(
        site="s1", asset="evse-1", ts_ms=1, event="started", transaction_id="tx1",
        start_ms=1_796_032_800_000, meter_start_wh=1000, soc_start_pct=20,
        id_token_hash=expected_hash,
    )  # fmt: skip
    assert ended.event == "ended"
    assert (ended.start_ms, ended.end_ms) == (1_796_032_800_000, 1_796_036_400_000)
    assert (ended.meter_start_wh, ended.meter_stop_wh) == (1000, 11_000)
    assert (ended.soc_start_pct, ended.soc_end_pct) == (20, 80)
    assert ended.id_token_hash == expected_hash
    assert ended.stopped_reason == "EVDisconnected"
    assert b"04A2B3C4D5E6F7" not in started.to_json() + ended.to_json()
    assert log.running("evse-1") is None


def test_a_transaction_whose_end_was_lost_is_dropped_without_a_made_up_end() -> None:
    log = TransactionLog("s1")
    log.on_event("evse-1", event("Started", "2026-11-30T10:00:00Z", tx="a"), now_ms=1)
    (second,) = log.on_event("evse-1", event("Started", "2026-11-30T12:00:00Z", tx="b"), now_ms=2)
    assert (second.event, second.transaction_id) == ("started", "b")
    running = log.running("evse-1")
    assert running is not None and running.transaction_id == "b"


def test_a_transaction_seen_first_at_its_end_is_one_ended_message() -> None:
    log = TransactionLog("s1")
    (only,) = log.on_event(
        "evse-1", event("Ended", "2026-11-30T11:00:00Z", import_wh=5000), now_ms=1
    )
    assert (only.event, only.start_ms, only.end_ms) == ("ended", only.end_ms, 1_796_036_400_000)
    assert only.meter_stop_wh == 5000


@pytest.mark.integration
def test_the_csms_publishes_a_simulated_cars_session_with_the_hash_of_its_token(
    mosquitto: Broker, loop_thread: LoopThread
) -> None:
    car = CarSpec(max_charge_w=11_000, v2x=False, initial_soc_pct=50, departure_s=1.5)
    site = Site(loop_thread, mosquitto.url, [spec("tx", "2.0.1", car)])
    topic = session_topic(site.id, "tx")
    with Subscriber(mosquitto.url, topic) as sub:
        site.start()
        try:
            assert sub.wait_for(lambda msgs: len(msgs) >= 2)
        finally:
            site.close()
    started, ended = (parse_payload(p) for _t, p in sub.messages[:2])
    assert isinstance(started, ChargingSession) and isinstance(ended, ChargingSession)
    assert (started.event, ended.event) == ("started", "ended")
    assert started.transaction_id == ended.transaction_id
    (evse,) = site.stations[0].evses.values()
    token = evse.id_token  # what the simulated card sent
    assert token is not None
    assert ended.id_token_hash == hashlib.sha256(f"ISO14443:{token}".encode()).hexdigest()
    assert ended.end_ms is not None and ended.end_ms >= ended.start_ms
    assert ended.meter_start_wh is not None and ended.meter_stop_wh is not None
    assert ended.meter_stop_wh > ended.meter_start_wh  # the car charged
    assert ended.soc_start_pct is not None and ended.soc_end_pct is not None
    assert ended.soc_end_pct > ended.soc_start_pct
    assert not any(token.encode() in p for _t, p in sub.messages)
