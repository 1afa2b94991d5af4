"""Which OCPP charging profile carries a setpoint to one EVSE: pure rules, no I/O.

Every device write lives in ``control/`` (issue 8); for charging stations the write is a
``SetChargingProfile`` request that the CSMS (``collectors.ocpp``) sends over the station's
WebSocket. This module decides that request in wire format (camelCase, as in the OCPP
specification); the CSMS only transports it. Rules (docs/ocpp.md, "Setpoints"):

===========================  ========================  ===================================
EVSE                         setpoint                  request
===========================  ========================  ===================================
transaction, 2.1, V2X car    any sign                  TxProfile, ``operationMode``
                                                       CentralSetpoint, ``setpoint`` with
                                                       ``limit``/``dischargeLimit``
transaction, 2.1, other car  charge (>= 0)             TxProfile, ChargingOnly ``limit``
transaction, 2.0.1           charge (>= 0)             TxProfile ``limit``
no transaction               charge (>= 0)             TxDefaultProfile ``limit`` on the
                                                       EVSE (for the next transaction)
no transaction               discharge (< 0)           refused: discharge needs a running
                                                       V2X session
the station's EVSEs          station-wide limit        ChargingStationMaxProfile on
together                                               evseId 0 (Absolute)
transaction, 2.1             frequency-watt curve      TxProfile, ``operationMode``
                                                       LocalFrequency, ``v2xFreqWattCurve``
===========================  ========================  ===================================

Profile ids are fixed per purpose and EVSE (:func:`profile_id`), so a new setpoint replaces
the previous one of its kind on the station; the LocalFrequency profile shares the
TxProfile's id (the station follows either a setpoint or its own frequency, not both).

:func:`freq_watt_curve` turns IEEE 1547-2018 droop parameters into the OCPP 2.1
``v2xFreqWattCurve`` whose linear interpolation is exactly
:func:`pipelines.dispatch.droop_delta_w` (the dispatch's own law), so a station programmed
with it answers a frequency deviation as the dispatch would have commanded.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gridflex.contract import EvChargingNeeds

__all__ = [
    "MAX_CURVE_POINTS",
    "ChargingProfilePlan",
    "DroopLike",
    "OperationMode",
    "ProfilePurpose",
    "Refusal",
    "StationFacts",
    "clear_requests",
    "freq_watt_curve",
    "plan_local_frequency",
    "plan_setpoint",
    "plan_station_max",
    "profile_id",
]

ProfilePurpose = Literal["TxProfile", "TxDefaultProfile", "ChargingStationMaxProfile"]
OperationMode = Literal["CentralSetpoint", "ChargingOnly", "LocalFrequency", "Limit"]
"""The OCPP 2.1 ``operationMode`` sent; ``Limit`` for OCPP 2.0.1 (a plain ``limit``)."""

#: OCPP 2.1 allows 1 to 20 points in a ``v2xFreqWattCurve``.
MAX_CURVE_POINTS = 20

_ID_BASE: dict[ProfilePurpose, int] = {
    "TxProfile": 1000,
    "TxDefaultProfile": 2000,
    "ChargingStationMaxProfile": 3000,
}


def profile_id(purpose: ProfilePurpose, evse_id: int) -> int:
    """The fixed id of gridflex's profile of ``purpose`` on ``evse_id`` (0: the station).

    TxProfile ``1000 + evse``, TxDefaultProfile ``2000 + evse``, ChargingStationMaxProfile
    ``3000``: unique within a station, so each replaces only its own predecessor.
    """
    return _ID_BASE[purpose] + (0 if purpose == "ChargingStationMaxProfile" else evse_id)


@dataclass(frozen=True)
class StationFacts:
    """What the setpoint rules need to know about one EVSE of a station right now.

    ``max_charge_w``/``max_discharge_w`` are the EVSE asset's caps from the site file;
    ``needs`` what the car stated (NotifyEVChargingNeeds), None when nothing was stated.
    """

    ocpp_version: Literal["2.0.1", "2.1"]
    transaction_id: str | None
    needs: EvChargingNeeds | None
    max_charge_w: float
    max_discharge_w: float
    evse_id: int = 1


@dataclass(frozen=True)
class ChargingProfilePlan:
    """A SetChargingProfile request to send (wire format, camelCase) and what it asks for.

    ``sent_w`` is the setpoint (or limit) the profile carries, W (+ charge); for a
    LocalFrequency profile its ``v2xBaseline``.
    """

    request: dict[str, Any]
    purpose: ProfilePurpose
    operation_mode: OperationMode
    sent_w: float
    clamped: bool


@dataclass(frozen=True)
class Refusal:
    """A request that is not sent, with the reason."""

    reason: str


class DroopLike(Protocol):
    """IEEE 1547 droop parameters (``gridflex.config.DroopConfig``, ``DroopParams``)."""

    @property
    def db_of_hz(self) -> float:
        """Over-frequency dead band, Hz."""
        ...

    @property
    def db_uf_hz(self) -> float:
        """Under-frequency dead band, Hz."""
        ...

    @property
    def k_of(self) -> float:
        """Over-frequency droop, per unit."""
        ...

    @property
    def k_uf(self) -> float:
        """Under-frequency droop, per unit."""
        ...


# --------------------------------------------------------------------------- caps


def _discharge_refusal(facts: StationFacts) -> Refusal | None:
    if facts.ocpp_version == "2.0.1":
        return Refusal("OCPP 2.0.1 has no discharge: a TxProfile limit cannot be negative")
    if facts.needs is None:
        return Refusal(
            "the car has not sent its charging needs: discharge needs an ISO 15118-20 V2X car"
        )
    if not facts.needs.v2x:
        mode = facts.needs.energy_transfer_mode or "unknown"
        return Refusal(
            f"the car is charge-only (requested energy transfer {mode}, no V2X / ISO 15118-20)"
        )
    if facts.max_discharge_w <= 0:
        return Refusal("the EVSE's max_discharge_w is 0 in the site configuration")
    if not facts.needs.max_discharge_w:
        return Refusal("the car reports a maximum discharge power of 0 W")
    return None


def _caps(facts: StationFacts) -> tuple[float, float, bool]:
    """(charge cap, discharge cap as a positive number, V2X) for an EVSE in a transaction."""
    charge_cap_w = facts.max_charge_w
    if facts.needs is not None and facts.needs.max_charge_w is not None:
        charge_cap_w = min(charge_cap_w, facts.needs.max_charge_w)
    v2x = facts.ocpp_version == "2.1" and facts.needs is not None and facts.needs.v2x
    discharge_cap_w = 0.0
    if v2x and facts.needs is not None:
        discharge_cap_w = min(facts.max_discharge_w, facts.needs.max_discharge_w or 0.0)
    return charge_cap_w, discharge_cap_w, v2x


def _profile(
    purpose: ProfilePurpose,
    evse_id: int,
    period: dict[str, Any],
    *,
    stack_level: int,
    transaction_id: str | None = None,
    kind: Literal["Relative", "Absolute"] = "Relative",
    start_schedule: str | None = None,
    valid_to: str | None,
    max_offline_s: int | None,
    ocpp_version: str,
) -> dict[str, Any]:
    pid = profile_id(purpose, evse_id)
    schedule: dict[str, Any] = {
        "id": pid,
        "chargingRateUnit": "W",
        "chargingSchedulePeriod": [period],
    }
    if start_schedule is not None:
        schedule["startSchedule"] = start_schedule
    profile: dict[str, Any] = {
        "id": pid,
        "stackLevel": stack_level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": kind,
        "chargingSchedule": [schedule],
    }
    if transaction_id is not None:
        profile["transactionId"] = transaction_id
    if valid_to is not None:
        profile["validTo"] = valid_to
    if max_offline_s is not None and ocpp_version == "2.1":
        profile["maxOfflineDuration"] = max_offline_s
        profile["invalidAfterOfflineDuration"] = True
    return {"evseId": evse_id, "chargingProfile": profile}


# --------------------------------------------------------------------------- setpoints


def plan_setpoint(
    facts: StationFacts,
    power_w: float,
    *,
    stack_level: int = 1,
    valid_to: str | None = None,
    max_offline_s: int | None = None,
) -> ChargingProfilePlan | Refusal:
    """Decide the SetChargingProfile request for an absolute setpoint of ``power_w`` (+ charge).

    - With a transaction on the EVSE: a TxProfile for it. OCPP 2.1 with a V2X car:
      ``operationMode`` CentralSetpoint, ``setpoint`` = ``power_w`` clamped to [-discharge
      cap, charge cap], ``limit`` = charge cap and ``dischargeLimit`` = -discharge cap, each
      cap the smaller of the site's EVSE limit and the car's. OCPP 2.1 with a charge-only
      car, and OCPP 2.0.1: a ``limit`` in W, never negative (``operationMode`` ChargingOnly
      on 2.1).
    - Without a transaction: a TxDefaultProfile ``limit`` on the EVSE (the station applies
      it to the next transaction there), clamped to [0, site cap].
    - Discharge (``power_w < 0``) is refused without a transaction, for OCPP 2.0.1, for a
      car whose charging needs show no V2X (ISO 15118-2, or none sent), and where the site
      or the car allows no discharge.
    - ``valid_to`` (RFC 3339 ``Z``) lets the station fall back to its default when commands
      stop; ``max_offline_s`` (2.1 only) drops the profile after that long offline.
    """
    version = facts.ocpp_version
    if facts.transaction_id is None:
        if power_w < 0:
            return Refusal(
                f"no transaction runs on EVSE {facts.evse_id}: discharge needs a running "
                "V2X session (a TxDefaultProfile only limits charging)"
            )
        sent_w = min(facts.max_charge_w, power_w)
        period: dict[str, Any] = {"startPeriod": 0, "limit": sent_w}
        mode: OperationMode = "Limit"
        if version == "2.1":
            mode = "ChargingOnly"
            period["operationMode"] = mode
        request = _profile(
            "TxDefaultProfile",
            facts.evse_id,
            period,
            stack_level=stack_level,
            valid_to=valid_to,
            max_offline_s=max_offline_s,
            ocpp_version=version,
        )
        return ChargingProfilePlan(request, "TxDefaultProfile", mode, sent_w, sent_w != power_w)

    if power_w < 0:
        refusal = _discharge_refusal(facts)
        if refusal is not None:
            return refusal
    charge_cap_w, discharge_cap_w, v2x = _caps(facts)
    sent_w = min(charge_cap_w, max(-discharge_cap_w, power_w))
    period = {"startPeriod": 0}
    if v2x:
        mode = "CentralSetpoint"
        period.update(
            operationMode=mode,
            setpoint=sent_w,
            limit=charge_cap_w,
            dischargeLimit=-discharge_cap_w if discharge_cap_w else 0.0,
        )
    else:
        sent_w = max(0.0, sent_w)
        period["limit"] = sent_w
        mode = "Limit"
        if version == "2.1":
            mode = "ChargingOnly"
            period["operationMode"] = mode
    request = _profile(
        "TxProfile",
        facts.evse_id,
        period,
        stack_level=stack_level,
        transaction_id=facts.transaction_id,
        valid_to=valid_to,
        max_offline_s=max_offline_s,
        ocpp_version=version,
    )
    return ChargingProfilePlan(request, "TxProfile", mode, sent_w, sent_w != power_w)


def plan_station_max(
    ocpp_version: Literal["2.0.1", "2.1"],
    max_w: float,
    *,
    start_schedule: str,
    stack_level: int = 0,
) -> ChargingProfilePlan:
    """The station-wide limit of all its EVSEs together: ChargingStationMaxProfile, evseId 0.

    OCPP forbids a Relative ChargingStationMaxProfile, so it is Absolute from
    ``start_schedule`` (RFC 3339 ``Z``, normally now) without an end.
    """
    limit_w = max(0.0, max_w)
    request = _profile(
        "ChargingStationMaxProfile",
        0,
        {"startPeriod": 0, "limit": limit_w},
        stack_level=stack_level,
        kind="Absolute",
        start_schedule=start_schedule,
        valid_to=None,
        max_offline_s=None,
        ocpp_version=ocpp_version,
    )
    return ChargingProfilePlan(request, "ChargingStationMaxProfile", "Limit", limit_w, False)


def plan_local_frequency(
    facts: StationFacts,
    curve: Sequence[tuple[float, float]],
    *,
    baseline_w: float = 0.0,
    stack_level: int = 1,
    valid_to: str | None = None,
    max_offline_s: int | None = None,
) -> ChargingProfilePlan | Refusal:
    """An OCPP 2.1 LocalFrequency TxProfile: the station follows its own frequency reading.

    ``curve`` is ``(freq_hz, power_w)`` points (1-20, frequencies increasing; see
    :func:`freq_watt_curve`); the station's power is ``v2xBaseline`` (``baseline_w``) plus
    the curve interpolated at the frequency it measures, within ``limit`` (charge cap) and
    ``dischargeLimit`` (-discharge cap: 0 for a charge-only car), so the station clips the
    response at the caps while the curve keeps its slope. The baseline is clipped into the
    caps (``clamped`` says so). Refused for OCPP 2.0.1 (no operation modes) and without a
    transaction (a TxProfile needs one).
    """
    if facts.ocpp_version != "2.1":
        return Refusal("OCPP 2.0.1 has no LocalFrequency operation mode (OCPP 2.1 only)")
    if facts.transaction_id is None:
        return Refusal(
            f"no transaction runs on EVSE {facts.evse_id}: a LocalFrequency TxProfile needs one"
        )
    if not 1 <= len(curve) <= MAX_CURVE_POINTS:
        return Refusal(f"a v2xFreqWattCurve has 1 to {MAX_CURVE_POINTS} points, got {len(curve)}")
    freqs = [f for f, _ in curve]
    if any(b <= a for a, b in itertools.pairwise(freqs)):
        return Refusal("the curve's frequencies must increase")
    charge_cap_w, discharge_cap_w, _v2x = _caps(facts)

    def clip(value: float) -> float:
        return min(charge_cap_w, max(-discharge_cap_w, value))

    points = [{"frequency": f, "power": p} for f, p in curve]
    sent_w = clip(baseline_w)
    period: dict[str, Any] = {
        "startPeriod": 0,
        "operationMode": "LocalFrequency",
        "limit": charge_cap_w,
        "dischargeLimit": -discharge_cap_w if discharge_cap_w else 0.0,
        "v2xBaseline": sent_w,
        "v2xFreqWattCurve": points,
    }
    request = _profile(
        "TxProfile",
        facts.evse_id,
        period,
        stack_level=stack_level,
        transaction_id=facts.transaction_id,
        valid_to=valid_to,
        max_offline_s=max_offline_s,
        ocpp_version="2.1",
    )
    return ChargingProfilePlan(request, "TxProfile", "LocalFrequency", sent_w, sent_w != baseline_w)


def clear_requests(evse_id: int) -> list[dict[str, Any]]:
    """ClearChargingProfile requests that remove gridflex's profiles of one EVSE.

    One per profile id (TxProfile, TxDefaultProfile): other parties' profiles stay.
    """
    return [
        {"chargingProfileId": profile_id("TxProfile", evse_id)},
        {"chargingProfileId": profile_id("TxDefaultProfile", evse_id)},
    ]


# --------------------------------------------------------------------------- droop curve


def freq_watt_curve(
    nominal_hz: float,
    droop: DroopLike,
    *,
    rated_charge_w: float,
    rated_discharge_w: float,
) -> tuple[tuple[float, float], ...]:
    """The IEEE 1547-2018 frequency droop as an OCPP 2.1 ``v2xFreqWattCurve``.

    Four points ``(freq_hz, power_w)``, + charge: full discharge at ``nominal - db_uf -
    k_uf * nominal``, 0 W at both dead-band edges ``nominal - db_uf`` and ``nominal +
    db_of``, full charge at ``nominal + db_of + k_of * nominal``. Interpolated linearly
    and held flat beyond the ends (as OCPP curves are), it equals
    ``pipelines.dispatch.droop_delta_w(f, nominal, droop, rated_charge_w=...,
    rated_discharge_w=...)`` at every frequency: the power is added to ``v2xBaseline``.

    Args:
        nominal_hz: Nominal frequency, Hz (50 or 60).
        droop: Dead bands (Hz) and per-unit droops (``gridflex.config.DroopConfig``).
        rated_charge_w: Charge rating the over-frequency response scales with, W >= 0.
        rated_discharge_w: Discharge rating, positive, W >= 0 (0 for a charge-only car).

    Returns:
        The points, frequencies increasing.

    """
    low_edge = nominal_hz - droop.db_uf_hz
    high_edge = nominal_hz + droop.db_of_hz
    return (
        (low_edge - droop.k_uf * nominal_hz, -rated_discharge_w + 0.0),
        (low_edge, 0.0),
        (high_edge, 0.0),
        (high_edge + droop.k_of * nominal_hz, rated_charge_w),
    )
