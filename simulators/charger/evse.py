"""One EVSE of a simulated station: its car, transaction, profiles and messages (no I/O).

``SimEvse`` holds what OCPP 2.x keeps per ``evseId``: the connector status, the running
transaction and its ``seqNo``, the meter registers, the car (``simulators.ev``) and the
charging profiles set on it (a TxProfile for the transaction, a TxDefaultProfile for the
EVSE). It builds its own wire-format messages; the station (``simulators.charger.station``)
sends them and steps the physics.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, replace
from typing import Any

from simulators.charger.control import Control
from simulators.charger.fleet import EvseSpec, OcppVersion
from simulators.charger.wire import ocpp_time, sampled_values
from simulators.ev import EvState, ThermalSpec, initial_state

__all__ = ["Profile", "SimEvse"]


@dataclass(frozen=True)
class Profile:
    """A charging profile held by the station: id, what the car follows, and until when.

    ``valid_to_s`` is the profile's ``validTo`` as UTC epoch seconds; None: until replaced.
    """

    profile_id: int
    control: Control
    valid_to_s: float | None = None

    def valid(self, now_s: float) -> bool:
        """Whether the profile is still in force at ``now_s`` (UTC epoch seconds)."""
        return self.valid_to_s is None or now_s < self.valid_to_s


class SimEvse:
    """One EVSE and the car on it (see the module docstring)."""

    def __init__(self, spec: EvseSpec, meter_import_wh: float) -> None:
        self.spec = spec
        self.evse_id = spec.evse_id
        self.ev: EvState | None = None
        self.meter_import_wh = meter_import_wh
        self.meter_export_wh = 0.0
        self.transaction_id: str | None = None
        self.id_token: str | None = None
        self.tx_seq_no = 0
        self.connector_status = "Available"
        self.departed = False
        self.reported_temp_c: float | None = None
        self.tx_profile: Profile | None = None
        self.default_profile: Profile | None = None
        self.next_meter_s = 0.0

    def own_control(self, now_s: float) -> Control | None:
        """The EVSE's own profile in force: the TxProfile in a transaction, else its default.

        A profile past its ``validTo`` is not in force (the station's own fail-safe).
        """
        held = [self.default_profile]
        if self.transaction_id is not None:
            held.insert(0, self.tx_profile)
        for profile in held:
            if profile is not None and profile.valid(now_s):
                return profile.control
        return None

    def plug_in(self, thermal: ThermalSpec) -> None:
        """The car arrives: a new transaction starts (state only; no message sent)."""
        self.ev = replace(
            initial_state(self.spec.car, thermal),
            energy_import_wh=self.meter_import_wh,
            energy_export_wh=self.meter_export_wh,
        )
        self.transaction_id = uuid.uuid4().hex[:16]
        # The driver's RFID card: a made-up 7-byte ISO 14443 UID (NXP's 04 first), drawn on
        # its own so that nothing else the station sends (the transaction id) reveals it.
        self.id_token = "04" + secrets.token_hex(6).upper()
        self.tx_seq_no = -1
        self.tx_profile = None
        self.connector_status = "Occupied"

    def end_transaction(self) -> None:
        """The transaction is over: its TxProfile goes, the registers stay."""
        self.transaction_id = None
        self.tx_profile = None
        if self.ev is not None:
            self.meter_import_wh = self.ev.energy_import_wh
            self.meter_export_wh = self.ev.energy_export_wh
            self.ev = replace(self.ev, power_w=0.0)

    def transaction_event_request(
        self,
        event_type: str,
        trigger: str,
        *,
        measurands: frozenset[str],
        version: OcppVersion,
        stopped_reason: str | None = None,
        freq_hz: float | None = None,
        control: Control | None = None,
    ) -> dict[str, Any]:
        """A TransactionEventRequest in wire format (camelCase), with a meter value.

        ``control`` is the profile in force (its 2.1 ``setpoint`` is reported).
        """
        self.tx_seq_no += 1
        now = ocpp_time()
        info: dict[str, Any] = {"transactionId": self.transaction_id}
        if self.ev is not None and event_type != "Ended":
            info["chargingState"] = "Charging" if self.ev.power_w != 0 else "SuspendedEV"
        if stopped_reason is not None:
            info["stoppedReason"] = stopped_reason
        payload: dict[str, Any] = {
            "eventType": event_type,
            "timestamp": now,
            "triggerReason": trigger,
            "seqNo": self.tx_seq_no,
            "transactionInfo": info,
            "evse": {"id": self.evse_id, "connectorId": 1},
        }
        if event_type == "Started" and self.id_token is not None:
            payload["idToken"] = {"idToken": self.id_token, "type": "ISO14443"}
        if self.ev is not None:
            setpoint = None
            if version == "2.1" and control is not None:
                setpoint = control.setpoint_w
            values = sampled_values(self.ev, measurands, setpoint_w=setpoint, freq_hz=freq_hz)
            payload["meterValue"] = [{"timestamp": now, "sampledValue": values}]
        return payload

    def meter_values_request(
        self, measurands: frozenset[str], *, freq_hz: float | None = None
    ) -> dict[str, Any]:
        """A MeterValuesRequest in wire format for an idle EVSE (registers, no SoC)."""
        ev = self.ev or EvState(
            soc_pct=0.0,
            energy_import_wh=self.meter_import_wh,
            energy_export_wh=self.meter_export_wh,
        )
        values = [
            v
            for v in sampled_values(ev, measurands, freq_hz=freq_hz)
            if v["measurand"] != "SoC" or self.ev
        ]
        return {
            "evseId": self.evse_id,
            "meterValue": [{"timestamp": ocpp_time(), "sampledValue": values}],
        }
