"""OCPP-J messages of a simulated station in wire format, built without the library (pure).

The frequent messages (meter values, transaction events) are built here as wire-format
dicts instead of through the ``ocpp`` library's dataclasses and key renaming; the tests
check their shape against the OCPP schemas. ``answer_frame`` picks the answer to the
station's own CALL out of a received frame (the fast path of ``call_wire``), and
``next_meter_s`` keeps a station's meter-value phase.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from typing import Any

from ocpp.messages import MessageType

from simulators.charger.fleet import OcppVersion
from simulators.ev import CarSpec, EvState

__all__ = [
    "DEFAULT_MEASURANDS",
    "FRAME_ENCODER",
    "PHASES",
    "SUPPORTED_MEASURANDS",
    "VOLTAGE_V",
    "answer_frame",
    "charging_needs_payload",
    "next_meter_s",
    "ocpp_time",
    "sampled_values",
]

#: Measurands a station samples until the CSMS sets its own list.
DEFAULT_MEASURANDS = frozenset(
    {"Energy.Active.Import.Register", "Power.Active.Import", "Power.Active.Export", "SoC"}
)
SUPPORTED_MEASURANDS = frozenset(
    {
        "Energy.Active.Import.Register",
        "Energy.Active.Export.Register",
        "Power.Active.Import",
        "Power.Active.Export",
        "Power.Active.Setpoint",
        "SoC",
        "Current.Import",
        "Current.Export",
        "Voltage",
        "Frequency",
    }
)
VOLTAGE_V = 230.0
PHASES = 3


def ocpp_time(ts: float | None = None) -> str:
    """RFC 3339 UTC with ``Z`` and milliseconds for an epoch time in seconds (default now)."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return moment.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def sampled_values(
    ev: EvState,
    measurands: frozenset[str],
    *,
    setpoint_w: float | None = None,
    freq_hz: float | None = None,
) -> list[dict[str, Any]]:
    """Sampled values (wire format, camelCase) for the measurands the CSMS asked for.

    ``Power.Active.Setpoint`` whenever ``setpoint_w`` is given (OCPP 2.1); ``Frequency``
    when asked for and ``freq_hz`` is known.
    """
    power_w = ev.power_w
    current_a = abs(power_w) / (VOLTAGE_V * PHASES)
    table: list[tuple[str, float, str, str | None]] = [
        ("Power.Active.Import", max(0.0, power_w), "W", None),
        ("Power.Active.Export", max(0.0, -power_w), "W", None),
        ("Energy.Active.Import.Register", ev.energy_import_wh, "Wh", None),
        ("Energy.Active.Export.Register", ev.energy_export_wh, "Wh", None),
        ("SoC", ev.soc_pct, "Percent", "EV"),
        ("Current.Import", current_a if power_w > 0 else 0.0, "A", None),
        ("Current.Export", current_a if power_w < 0 else 0.0, "A", None),
        ("Voltage", VOLTAGE_V, "V", None),
    ]
    if setpoint_w is not None:
        table.append(("Power.Active.Setpoint", setpoint_w, "W", None))
    if freq_hz is not None:
        table.append(("Frequency", freq_hz, "Hz", None))
    values = []
    for measurand, value, unit, location in table:
        if measurand not in measurands and measurand != "Power.Active.Setpoint":
            continue
        item: dict[str, Any] = {
            "value": round(value, 3 if unit == "Hz" else 2),
            "measurand": measurand,
            "unitOfMeasure": {"unit": unit},
        }
        if location is not None:
            item["location"] = location
        values.append(item)
    return values


def charging_needs_payload(
    car: CarSpec, ev: EvState, version: OcppVersion, *, departure_epoch_s: float | None
) -> dict[str, Any]:
    """``chargingNeeds`` (snake_case) of the car: 2.1 V2X parameters, or AC charge-only."""
    energy_wh = max(0.0, (car.target_soc_pct - ev.soc_pct) / 100.0 * car.capacity_wh)
    needs: dict[str, Any] = {}
    if departure_epoch_s is not None:
        needs["departure_time"] = ocpp_time(departure_epoch_s)
    if version == "2.1" and car.v2x:
        min_v2x_wh = (car.min_soc_pct - ev.soc_pct) / 100.0 * car.capacity_wh
        needs.update(
            requested_energy_transfer="DC_BPT",
            available_energy_transfer=["DC", "DC_BPT"],
            control_mode="DynamicControl",
            dc_charging_parameters={
                "ev_max_current": round(car.max_charge_w / 400.0, 1),
                "ev_max_voltage": 450.0,
                "ev_max_power": car.max_charge_w,
                "ev_energy_capacity": car.capacity_wh,
                "energy_amount": round(energy_wh, 1),
                "state_of_charge": round(ev.soc_pct),
            },
            v2x_charging_parameters={
                "max_charge_power": car.max_charge_w,
                "max_discharge_power": car.max_discharge_w,
                "min_charge_power": 0.0,
                "min_discharge_power": 0.0,
                "ev_target_energy_request": round(energy_wh, 1),
                "ev_min_v2x_energy_request": round(min_v2x_wh, 1),
                "target_soc": round(car.target_soc_pct),
            },
        )
    else:
        needs.update(
            requested_energy_transfer="AC_three_phase",
            # integers: OCPP 2.0.1 types these fields as integer (2.1 as number)
            ac_charging_parameters={
                "energy_amount": round(energy_wh),
                "ev_min_current": 6,
                "ev_max_current": round(car.max_charge_w / (VOLTAGE_V * PHASES)),
                "ev_max_voltage": round(VOLTAGE_V),
            },
        )
    return needs


def next_meter_s(due_s: float, interval_s: float, now_s: float) -> float:
    """When the next periodic meter value is due after the one due at ``due_s``.

    The station keeps its phase: meter values are due at ``due_s + k * interval_s``, and
    slots that went by while it was late are skipped rather than sent in a burst. A station
    that was late does not take a new phase from the moment it caught up: stations made
    late together (a busy simulator process, a stall) would all take nearly the same
    phase and from then on send in a synchronized burst every interval.
    """
    following = due_s + interval_s
    if following <= now_s:
        following += math.ceil((now_s - following) / interval_s + 1e-9) * interval_s
    return following


FRAME_ENCODER = json.JSONEncoder(separators=(",", ":"))
"""OCPP-J frames as the library writes them (compact, ASCII), without a new encoder each."""


def answer_frame(raw_msg: str, unique_id: str) -> list[Any] | None:
    """The CALLRESULT or CALLERROR frame (a list) answering ``unique_id``, else None."""
    try:
        frame = json.loads(raw_msg)
    except ValueError:
        return None
    if not isinstance(frame, list) or len(frame) < 3 or frame[1] != unique_id:
        return None
    if frame[0] == MessageType.CallResult and len(frame) == 3 and isinstance(frame[2], dict):
        return frame
    if frame[0] == MessageType.CallError and len(frame) == 5:
        return frame
    return None
