"""Simulated bidirectional battery inverters speaking SunSpec over Modbus TCP.

``gridflex sim inverters --count N --base-port P`` serves N devices, device ``i`` on port
``P + i`` (unit id 1), all in one process and one asyncio loop. Three layers:

- ``InverterModel``: the physics of one device (pure, ``step(dt_s, freq_hz)``): AC power
  follows the 704 ``WSet`` setpoint plus, when 711 ``Ena`` is set, the frequency-droop
  response to the device's own frequency reading (``simulators.droop``: IEEE 1547 law, a
  first-order lag with ``tau = RspTms / ln 10``), with a ramp limit, clamped to the
  ratings and 704 ``WMaxLimPct``; SoC integrates power against capacity and power stops at
  the SoC stop points; the import/export meters count up; ``WSetRvrtTms`` reverts the
  setpoint to ``WSetRvrt`` and ``WMaxLimPctRvrtTms`` the limit to ``WMaxLimPctRvrt`` when
  no new write arrived in time (fail-safe, DESIGN.md invariant 3). The model uses
  gridflex's sign (+ charging/import); the register edge converts with
  ``gridflex.sunspec.sign`` (SunSpec W and WSet are + for injection).
- ``SimulatedInverter``: the SunSpec register map (``SunS`` at 40000, then models 1, 701,
  702, 704, 711, 713 laid out per the shipped definitions, then ``0xFFFF, 0``) as one
  big-endian byte image, and ``handle_pdu`` for Modbus function codes 3, 6 and 16 (pure:
  bytes in, bytes out). Writes reach only the RW points the simulator implements (704
  power controls; 711 ``Ena``, ``AdptCtlReq`` and the writable control sets); anything
  else is answered with exception 2 (illegal data address), a bad enum value or a droop
  of 0 in the active set with exception 3. 711 has ``droop_controls`` stored sets
  (``NCtl``): with one (the default) ``Ctl[0]`` is writable and active; with more,
  ``Ctl[0]`` is the read-only factory set and a client writes another set and adopts it
  by writing its index to ``AdptCtlReq`` (``AdptCtlRslt`` COMPLETED or FAILED, see
  ``simulators.droop.droop_state``). ``reboot()`` puts the controls back to factory.
- ``InverterFleet``: one lean asyncio Modbus TCP server per device (MBAP framing over an
  ``asyncio.Protocol``) and a 10 Hz update task. A lean server instead of pymodbus's: a
  read is a slice of the byte image, so 1,000 devices polled 5 times a second cost the
  simulator little CPU, leaving the shared cores to the collector being measured.
  ``stop_device(i)`` / ``start_device(i)`` take one device off the network and back,
  ``reboot_device(i)`` power-cycles it (its controls back to factory).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gridflex.net import raise_open_file_limit
from gridflex.runtime import stop_on_signals
from gridflex.sunspec.codec import Value, decode, unscale
from gridflex.sunspec.discovery import SUNS_MARKER
from gridflex.sunspec.sign import power_w_from_sunspec, sunspec_w_from_power_w
from gridflex.sunspec.tables import ModelTable, Point, load_model
from simulators.droop import (
    ADOPT_COMPLETED,
    DroopParams,
    DroopScale,
    droop_delta_w,
    droop_state,
    first_order_step,
    time_constant_s,
)
from simulators.grid_frequency import (
    FrequencyProfile,
    FrequencySource,
    ProfileError,
    StochasticFrequency,
)

__all__ = [
    "BASE_ADDRESS",
    "InverterFleet",
    "InverterModel",
    "InverterRatings",
    "SimulatedInverter",
    "add_arguments",
    "main",
    "writable_points",
]

log = logging.getLogger(__name__)

BASE_ADDRESS = 40000
UNIT_ID = 1
MAP_MODELS: tuple[int, ...] = (1, 701, 702, 704, 711, 713)
#: Stored droop control sets of the simulated 711 (``NCtl``) by default: one, read-write.
DROOP_CONTROLS = 1

# Modbus exception codes.
ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
GATEWAY_TARGET_FAILED = 0x0B

# Fixed scale factors of the simulated map (W, WH and A scale with the ratings).
_HZ_SF = -3
_V_SF = -1
_TMP_SF = -1
_PCT_SF = -1
_WMAXLIMPCT_SF = -1
_DB_SF = -3  # 711 dead bands: 0.036 Hz = 36
_K_SF = -3  # 711 droops: 0.05 = 50
_RSPTMS_SF = -1  # 711 response time: 5 s = 50
_DROOP_SCALE = DroopScale(db_sf=_DB_SF, k_sf=_K_SF, rsp_tms_sf=_RSPTMS_SF)
_CURVE_POINTS = ("DbOf", "DbUf", "KOf", "KUf", "RspTms")
_READ_ONLY = 1  # 711 Ctl.ReadOnly: R

# 701 InvSt values used by the simulator.
_INVST_RUNNING = 3
_INVST_FAULT = 6
_INVST_STANDBY = 7
_ALRM_GROUND_FAULT = 1 << 0
_ENABLED = 1

#: 704 points a client may write (the simulator implements them); other RW points refuse.
_WRITABLE_704 = frozenset(
    {
        "WMaxLimPctEna",
        "WMaxLimPct",
        "WMaxLimPctRvrt",
        "WMaxLimPctEnaRvrt",
        "WMaxLimPctRvrtTms",
        "WSetEna",
        "WSetMod",
        "WSet",
        "WSetRvrt",
        "WSetEnaRvrt",
        "WSetRvrtTms",
    }
)


def writable_points(droop_controls: int) -> dict[int, frozenset[str]]:
    """Points a client may write, by model, for a 711 with ``droop_controls`` sets.

    711: ``Ena``, ``AdptCtlReq`` and the curve of every writable set (all of one set; with
    several, all but the read-only factory set ``Ctl[0]``). Its reversion and ``PMin``
    are not simulated.
    """
    first = 0 if droop_controls == 1 else 1
    curves = {f"Ctl[{i}].{name}" for i in range(first, droop_controls) for name in _CURVE_POINTS}
    return {704: _WRITABLE_704, 711: frozenset({"Ena", "AdptCtlReq"} | curves)}


#: The model's control state, which a reboot puts back to factory (the physics stays).
_CONTROL_FIELDS = (
    "setpoint_enabled",
    "setpoint_w",
    "wmax_lim_enabled",
    "wmax_lim_pct",
    "revert_enabled",
    "revert_setpoint_w",
    "revert_timeout_s",
    "revert_remaining_s",
    "wmax_lim_revert_enabled",
    "wmax_lim_revert_pct",
    "wmax_lim_revert_timeout_s",
    "wmax_lim_revert_remaining_s",
    "droop_enabled",
    "droop",
)
# 704 writes that restart the WSet reversion timer, and the WMaxLimPct one.
_SETPOINT_POINTS = frozenset({"WSetEna", "WSet", "WSetRvrtTms"})
_WMAXLIM_POINTS = frozenset({"WMaxLimPctEna", "WMaxLimPct", "WMaxLimPctRvrtTms"})


def _pct(raw: Value) -> float:
    """A 704 ``WMaxLimPct``-scaled raw value in percent (100 when not implemented)."""
    return 100.0 if raw is None else float(raw) * 10.0**_WMAXLIMPCT_SF


def _sf_for(max_value: float, type_max: int) -> int:
    """Smallest scale factor >= 0 that fits ``max_value`` into a register of ``type_max``."""
    sf = 0
    while max_value / 10**sf > type_max:
        sf += 1
    return sf


# --------------------------------------------------------------------------- physics


@dataclass(frozen=True)
class InverterRatings:
    """Nameplate of one simulated inverter with its battery."""

    max_charge_w: float = 11_000.0
    max_discharge_w: float = 11_000.0
    capacity_wh: float = 60_000.0
    ramp_w_per_s: float = 5_000.0
    soc_stop_min_pct: float = 0.0
    soc_stop_max_pct: float = 100.0
    voltage_v: float = 230.0
    nominal_hz: float = 50.0


@dataclass
class InverterModel:
    """Physics and control state of one inverter; ``power_w`` is + for charging/import.

    ``setpoint_w``/``revert_setpoint_w``/``droop_w`` are in gridflex's sign too.
    ``step(dt_s, freq_hz)`` advances the state; the register image reads the fields
    afterwards. ``freq_hz`` is the device's own frequency reading (701 ``Hz``); the droop
    response (711) is computed from it.
    """

    ratings: InverterRatings = field(default_factory=InverterRatings)
    soc_pct: float = 50.0
    power_w: float = 0.0
    #: A ground fault trips the inverter: 0 W at once, 701 InvSt FAULT, Alrm GROUND_FAULT.
    ground_fault: bool = False
    energy_import_wh: float = 0.0
    energy_export_wh: float = 0.0
    ambient_c: float = 25.0
    setpoint_enabled: bool = False
    setpoint_w: float = 0.0
    wmax_lim_enabled: bool = False
    wmax_lim_pct: float = 100.0
    revert_enabled: bool = True
    revert_setpoint_w: float = 0.0
    revert_timeout_s: float = 0.0
    revert_remaining_s: float = 0.0
    wmax_lim_revert_enabled: bool = False
    wmax_lim_revert_pct: float = 100.0
    wmax_lim_revert_timeout_s: float = 0.0
    wmax_lim_revert_remaining_s: float = 0.0
    freq_hz: float = 50.0
    droop_enabled: bool = False
    droop: DroopParams = field(default_factory=DroopParams)
    droop_w: float = 0.0

    def write_setpoint(self, enabled: bool, setpoint_w: float) -> None:
        """Apply a new setpoint (as a 704 write does) and restart the reversion timer."""
        self.setpoint_enabled = enabled
        self.setpoint_w = setpoint_w
        self.restart_reversion()

    def restart_reversion(self) -> None:
        """Start the reversion countdown (if ``revert_timeout_s`` > 0)."""
        self.revert_remaining_s = self.revert_timeout_s

    def write_wmax_lim(self, enabled: bool, pct: float) -> None:
        """Apply a new 704 ``WMaxLimPct`` (as a write does) and restart its reversion timer."""
        self.wmax_lim_enabled = enabled
        self.wmax_lim_pct = pct
        self.wmax_lim_revert_remaining_s = self.wmax_lim_revert_timeout_s

    def droop_target_w(self) -> float:
        """Static droop response to ``freq_hz`` (0 when 711 is disabled), W, + charging."""
        if not self.droop_enabled:
            return 0.0
        r = self.ratings
        return droop_delta_w(
            self.freq_hz,
            r.nominal_hz,
            self.droop,
            rated_charge_w=r.max_charge_w,
            rated_discharge_w=r.max_discharge_w,
        )

    def target_w(self) -> float:
        """Power the inverter heads for now: setpoint + droop, ratings, WMaxLimPct, SoC."""
        if self.ground_fault:
            return 0.0
        target = (self.setpoint_w if self.setpoint_enabled else 0.0) + self.droop_w
        limit = 1.0
        if self.wmax_lim_enabled:
            limit = min(max(self.wmax_lim_pct, 0.0), 100.0) / 100.0
        r = self.ratings
        target = min(max(target, -r.max_discharge_w * limit), r.max_charge_w * limit)
        if target > 0 and self.soc_pct >= r.soc_stop_max_pct:
            return 0.0
        if target < 0 and self.soc_pct <= r.soc_stop_min_pct:
            return 0.0
        return target

    @property
    def temp_c(self) -> float:
        """Cabinet temperature: ambient plus up to 15 K at full power."""
        full = max(self.ratings.max_charge_w, self.ratings.max_discharge_w, 1.0)
        return self.ambient_c + 15.0 * abs(self.power_w) / full

    def step(self, dt_s: float, freq_hz: float | None = None) -> None:
        """Advance ``dt_s`` seconds: reversions, droop, ramp toward the target, energy.

        ``freq_hz`` is the frequency the device measures over the step (kept from the last
        step when None).
        """
        if freq_hz is not None:
            self.freq_hz = freq_hz
        if dt_s <= 0:
            return
        if self.revert_remaining_s > 0:
            self.revert_remaining_s = max(0.0, self.revert_remaining_s - dt_s)
            if self.revert_remaining_s == 0.0:
                self.setpoint_w = self.revert_setpoint_w
                self.setpoint_enabled = self.revert_enabled
        if self.wmax_lim_revert_remaining_s > 0:
            self.wmax_lim_revert_remaining_s = max(0.0, self.wmax_lim_revert_remaining_s - dt_s)
            if self.wmax_lim_revert_remaining_s == 0.0:
                self.wmax_lim_pct = self.wmax_lim_revert_pct
                self.wmax_lim_enabled = self.wmax_lim_revert_enabled
        self.droop_w = first_order_step(
            self.droop_w,
            self.droop_target_w(),
            dt_s,
            time_constant_s(self.droop.response_time_s),
        )
        target = self.target_w()
        max_change = self.ratings.ramp_w_per_s * dt_s
        self.power_w += min(max(target - self.power_w, -max_change), max_change)
        if self.ground_fault:  # tripped: no ramp
            self.power_w = 0.0
        energy_wh = self.power_w * dt_s / 3600.0
        if energy_wh > 0:
            self.energy_import_wh += energy_wh
        else:
            self.energy_export_wh -= energy_wh
        r = self.ratings
        soc = self.soc_pct + 100.0 * energy_wh / r.capacity_wh
        if soc >= r.soc_stop_max_pct and self.power_w > 0:
            soc, self.power_w = r.soc_stop_max_pct, 0.0
        elif soc <= r.soc_stop_min_pct and self.power_w < 0:
            soc, self.power_w = r.soc_stop_min_pct, 0.0
        self.soc_pct = min(max(soc, 0.0), 100.0)


# --------------------------------------------------------------------------- register map


@dataclass(frozen=True)
class _Slot:
    """A model placed at an absolute address of the map."""

    table: ModelTable
    address: int  # of the model's ID register


class SimulatedInverter:
    """One device: an ``InverterModel`` behind a SunSpec register image.

    The image is a ``bytearray`` of big-endian registers from ``BASE_ADDRESS`` to the end
    marker; a read is a slice of it. ``refresh(freq_hz)`` writes the model's state into the
    image; ``handle_pdu`` answers Modbus requests. ``droop_controls`` is 711's ``NCtl``
    (see the module docstring).
    """

    def __init__(
        self,
        model: InverterModel,
        serial: str,
        unit_id: int = UNIT_ID,
        *,
        droop_controls: int = DROOP_CONTROLS,
    ) -> None:
        if not 1 <= droop_controls <= 10:
            raise ValueError(f"droop_controls: expected 1..10, got {droop_controls!r}")
        self.model = model
        self.unit_id = unit_id
        self.serial = serial
        self.droop_controls = droop_controls
        self.writable_points = writable_points(droop_controls)
        #: 711 ``AdptCtlReq`` in force: the active control set, 1-based (0: none).
        self.active_control = 1
        #: Fault injection: this many coming requests get no answer (the client times out).
        self.unanswered = 0
        self._factory = {name: getattr(model, name) for name in _CONTROL_FIELDS}
        r = model.ratings
        max_w = max(r.max_charge_w, r.max_discharge_w)
        self.sf: dict[str, int] = {
            "W_SF": _sf_for(max_w, 32_767),
            "WH_SF": _sf_for(r.capacity_wh, 65_534),
            "A_SF": -2 + _sf_for(100 * max_w / r.voltage_v, 32_767),
        }
        self.freq_hz = 50.0
        self._slots: dict[int, _Slot] = {}
        registers = list(SUNS_MARKER)
        for model_id in MAP_MODELS:
            table = load_model(model_id, {"Ctl": droop_controls} if model_id == 711 else None)
            self._slots[model_id] = _Slot(table, BASE_ADDRESS + len(registers))
            registers += table.encode(self._static_values(model_id, serial))
        registers += [0xFFFF, 0]
        self.end_address = BASE_ADDRESS + len(registers)
        self.image = bytearray(struct.pack(f">{len(registers)}H", *registers))
        self._writable = bytearray(len(registers))
        for model_id, names in self.writable_points.items():
            for name in names:
                address, size = self.address_of(model_id, name), self.point(model_id, name).size
                for a in range(address, address + size):
                    self._writable[a - BASE_ADDRESS] = 1
        self._addr = {
            name: 2 * (self.address_of(mid, name) - BASE_ADDRESS)
            for mid, name in (
                (701, "InvSt"),
                (701, "Alrm"),
                (701, "W"),  # W and VA (next register) are written together
                (701, "A"),
                (701, "Hz"),
                (701, "TotWhInj"),
                (701, "TotWhAbs"),
                (701, "TmpCab"),
                (704, "WMaxLimPctEna"),  # WMaxLimPct is the next register
                (704, "WMaxLimPctRvrtRem"),
                (704, "WSetEna"),
                (704, "WSet"),
                (704, "WSetRvrtRem"),
                (713, "WHAvail"),
                (713, "SoC"),
            )
        }
        self.refresh(self.freq_hz)

    # ---------------------------------------------------------------- layout

    def point(self, model_id: int, name: str) -> Point:
        """The ``Point`` row of ``name`` in model ``model_id``."""
        return self._slots[model_id].table.point(name)

    def address_of(self, model_id: int, name: str) -> int:
        """Absolute Modbus address of a point."""
        slot = self._slots[model_id]
        return slot.address + slot.table.point(name).offset

    def model_address(self, model_id: int) -> int:
        """Absolute address of a model's ``ID`` register."""
        return self._slots[model_id].address

    def _static_values(self, model_id: int, serial: str) -> dict[str, Value]:
        r = self.model.ratings
        w_sf, wh_sf = self.sf["W_SF"], self.sf["WH_SF"]
        if model_id == 1:
            return {
                "Mn": "gridflex",
                "Md": "SimInverter",
                "Vr": "0.1.0",
                "SN": serial,
                "DA": self.unit_id,
            }
        if model_id == 701:
            return {
                "ACType": 0,
                "St": 1,
                "ConnSt": 1,
                "LNV": unscale(r.voltage_v, _V_SF),
                "A_SF": self.sf["A_SF"],
                "V_SF": _V_SF,
                "Hz_SF": _HZ_SF,
                "W_SF": w_sf,
                "VA_SF": w_sf,
                "TotWh_SF": 0,
                "Tmp_SF": _TMP_SF,
            }
        if model_id == 702:
            return {
                "WMaxRtg": unscale(max(r.max_charge_w, r.max_discharge_w), w_sf),
                "WChaRteMaxRtg": unscale(r.max_charge_w, w_sf),
                "WDisChaRteMaxRtg": unscale(r.max_discharge_w, w_sf),
                "VNomRtg": unscale(r.voltage_v, _V_SF),
                "W_SF": w_sf,
                "V_SF": _V_SF,
            }
        if model_id == 704:
            return {
                "WMaxLimPctEna": 0,
                "WMaxLimPct": unscale(100.0, _WMAXLIMPCT_SF),
                "WMaxLimPctRvrt": unscale(self.model.wmax_lim_revert_pct, _WMAXLIMPCT_SF),
                "WMaxLimPctEnaRvrt": _ENABLED if self.model.wmax_lim_revert_enabled else 0,
                "WMaxLimPctRvrtTms": round(self.model.wmax_lim_revert_timeout_s),
                "WMaxLimPctRvrtRem": 0,
                "WSetEna": 0,
                "WSetMod": 1,
                "WSet": 0,
                "WSetRvrt": 0,
                "WSetEnaRvrt": 1,
                "WSetRvrtTms": 0,
                "WSetRvrtRem": 0,
                "WMaxLimPct_SF": _WMAXLIMPCT_SF,
                "WSet_SF": w_sf,
            }
        if model_id == 711:
            m = self.model
            values: dict[str, Value] = {
                "Ena": _ENABLED if m.droop_enabled else 0,
                "AdptCtlReq": self.active_control,
                "AdptCtlRslt": ADOPT_COMPLETED,
                "NCtl": self.droop_controls,
                "RvrtTms": 0,  # no reversion
                "RvrtRem": 0,
                "RvrtCtl": 0,
                "Db_SF": _DB_SF,
                "K_SF": _K_SF,
                "RspTms_SF": _RSPTMS_SF,
            }
            read_only = self.droop_controls > 1  # then Ctl[0] is the factory set
            for i in range(self.droop_controls):
                values |= {
                    f"Ctl[{i}].DbOf": unscale(m.droop.db_of_hz, _DB_SF),
                    f"Ctl[{i}].DbUf": unscale(m.droop.db_uf_hz, _DB_SF),
                    f"Ctl[{i}].KOf": unscale(m.droop.k_of, _K_SF),
                    f"Ctl[{i}].KUf": unscale(m.droop.k_uf, _K_SF),
                    f"Ctl[{i}].RspTms": unscale(m.droop.response_time_s, _RSPTMS_SF),
                    f"Ctl[{i}].ReadOnly": _READ_ONLY if read_only and i == 0 else 0,
                }
            return values
        if model_id == 713:
            return {
                "WHRtg": unscale(r.capacity_wh, wh_sf),
                "Sta": 0,
                "WH_SF": wh_sf,
                "Pct_SF": _PCT_SF,
            }
        return {}

    # ---------------------------------------------------------------- state <-> image

    def refresh(self, freq_hz: float) -> None:
        """Write the model's measurements and control state into the register image."""
        self.freq_hz = freq_hz
        m, img, at = self.model, self.image, self._addr
        w_scale = 10 ** self.sf["W_SF"]
        sunspec_w = round(sunspec_w_from_power_w(m.power_w) / w_scale)
        state = _INVST_RUNNING if sunspec_w else _INVST_STANDBY
        struct.pack_into(">H", img, at["InvSt"], _INVST_FAULT if m.ground_fault else state)
        struct.pack_into(">I", img, at["Alrm"], _ALRM_GROUND_FAULT if m.ground_fault else 0)
        struct.pack_into(">hh", img, at["W"], sunspec_w, abs(sunspec_w))
        amps = abs(m.power_w) / m.ratings.voltage_v
        struct.pack_into(">h", img, at["A"], round(amps / 10 ** self.sf["A_SF"]))
        struct.pack_into(">I", img, at["Hz"], unscale(freq_hz, _HZ_SF))
        struct.pack_into(
            ">QQ", img, at["TotWhInj"], int(m.energy_export_wh), int(m.energy_import_wh)
        )
        struct.pack_into(">h", img, at["TmpCab"], unscale(m.temp_c, _TMP_SF))
        struct.pack_into(
            ">HH",
            img,
            at["WMaxLimPctEna"],
            _ENABLED if m.wmax_lim_enabled else 0,
            unscale(m.wmax_lim_pct, _WMAXLIMPCT_SF),
        )
        struct.pack_into(">I", img, at["WMaxLimPctRvrtRem"], round(m.wmax_lim_revert_remaining_s))
        struct.pack_into(">H", img, at["WSetEna"], _ENABLED if m.setpoint_enabled else 0)
        struct.pack_into(
            ">i", img, at["WSet"], round(sunspec_w_from_power_w(m.setpoint_w) / w_scale)
        )
        struct.pack_into(">I", img, at["WSetRvrtRem"], round(m.revert_remaining_s))
        wh_avail = m.soc_pct / 100.0 * m.ratings.capacity_wh / 10 ** self.sf["WH_SF"]
        struct.pack_into(">HH", img, at["WHAvail"], round(wh_avail), unscale(m.soc_pct, _PCT_SF))

    def _model_values(self, model_id: int, names: Iterable[str] | None = None) -> dict[str, Value]:
        """Decode points of model ``model_id`` from the image (raw; default every point)."""
        start = 2 * (self.model_address(model_id) - BASE_ADDRESS)
        table = self._slots[model_id].table
        regs = struct.unpack_from(f">{table.size}H", self.image, start)
        return table.decode(regs, None if names is None else sorted(names))

    def _apply_controls(self, written: set[tuple[int, str]]) -> bool:
        """Push written 704/711 points into the model; False (nothing applied) if invalid."""
        c = self._model_values(704, _WRITABLE_704)
        for name in ("WMaxLimPctEna", "WMaxLimPctEnaRvrt", "WSetEna", "WSetEnaRvrt"):
            if c[name] not in (0, 1):
                return False
        if c["WSetMod"] != 1:  # only WATTS mode is simulated
            return False
        droop = droop_state(
            self._model_values(711),
            active=self.active_control,
            adopt_requested=(711, "AdptCtlReq") in written,
            scale=_DROOP_SCALE,
        )
        if droop is None:
            return False
        m = self.model
        w_scale = 10 ** self.sf["W_SF"]
        wset, wset_rvrt = c["WSet"], c["WSetRvrt"]
        assert isinstance(wset, int) and isinstance(wset_rvrt, int)
        m.revert_enabled = c["WSetEnaRvrt"] == _ENABLED
        m.revert_setpoint_w = power_w_from_sunspec(wset_rvrt * w_scale)
        tms = c["WSetRvrtTms"]
        m.revert_timeout_s = float(tms or 0)
        m.wmax_lim_revert_enabled = c["WMaxLimPctEnaRvrt"] == _ENABLED
        m.wmax_lim_revert_pct = _pct(c["WMaxLimPctRvrt"])
        m.wmax_lim_revert_timeout_s = float(c["WMaxLimPctRvrtTms"] or 0)
        names = {name for model_id, name in written if model_id == 704}
        if names & _WMAXLIM_POINTS:
            m.write_wmax_lim(c["WMaxLimPctEna"] == _ENABLED, _pct(c["WMaxLimPct"]))
        if names & _SETPOINT_POINTS:
            m.write_setpoint(c["WSetEna"] == _ENABLED, power_w_from_sunspec(wset * w_scale))
        self.active_control = droop.active
        m.droop_enabled = droop.enabled
        if droop.params is not None:
            m.droop = droop.params
        if droop.result is not None:
            for name, value in (("AdptCtlReq", droop.active), ("AdptCtlRslt", droop.result)):
                struct.pack_into(
                    ">H", self.image, 2 * (self.address_of(711, name) - BASE_ADDRESS), value
                )
        return True

    def reboot(self) -> None:
        """A power cycle: the battery and meters stay, the 704/711 controls go to factory.

        Factory is the control state the model had when the device was built; the 704 and
        711 blocks of the image are written afresh from it.
        """
        for name, value in self._factory.items():
            setattr(self.model, name, value)
        self.active_control = 1
        for model_id in (704, 711):
            slot = self._slots[model_id]
            registers = slot.table.encode(self._static_values(model_id, self.serial))
            start = 2 * (slot.address - BASE_ADDRESS)
            struct.pack_into(f">{len(registers)}H", self.image, start, *registers)
        self.refresh(self.freq_hz)

    def _written_points(self, address: int, count: int) -> set[tuple[int, str]]:
        written: set[tuple[int, str]] = set()
        for model_id, names in self.writable_points.items():
            base = self.model_address(model_id)
            lo, hi = address - base, address - base + count
            written |= {
                (model_id, p.name)
                for p in self._slots[model_id].table.points
                if p.name in names and p.offset < hi and p.offset + p.size > lo
            }
        return written

    def step(self, dt_s: float, freq_hz: float) -> None:
        """Advance the physics ``dt_s`` seconds at the measured ``freq_hz``, then refresh."""
        self.model.step(dt_s, freq_hz)
        self.refresh(freq_hz)

    def write_registers(self, address: int, values: list[int]) -> int | None:
        """Write registers as function 6/16 would; returns a Modbus exception code or None."""
        start = address - BASE_ADDRESS
        if start < 0 or address + len(values) > self.end_address:
            return ILLEGAL_DATA_ADDRESS
        if not all(self._writable[start : start + len(values)]):
            return ILLEGAL_DATA_ADDRESS
        before = bytes(self.image)
        struct.pack_into(f">{len(values)}H", self.image, 2 * start, *values)
        if not self._apply_controls(self._written_points(address, len(values))):
            self.image[:] = before
            return ILLEGAL_DATA_VALUE
        self.refresh(self.freq_hz)
        return None

    # ---------------------------------------------------------------- Modbus PDU

    def handle_pdu(self, unit_id: int, pdu: bytes) -> bytes:
        """Answer one Modbus request PDU with a response PDU (normal or exception)."""
        if not pdu:
            return bytes((0x80, ILLEGAL_FUNCTION))
        fc = pdu[0]
        if unit_id != self.unit_id:
            return bytes((fc | 0x80, GATEWAY_TARGET_FAILED))
        if fc == 3 and len(pdu) == 5:
            address, count = struct.unpack_from(">HH", pdu, 1)
            if not 1 <= count <= 125:
                return bytes((0x83, ILLEGAL_DATA_VALUE))
            start = 2 * (address - BASE_ADDRESS)
            if address < BASE_ADDRESS or address + count > self.end_address:
                return bytes((0x83, ILLEGAL_DATA_ADDRESS))
            return bytes((3, 2 * count)) + self.image[start : start + 2 * count]
        if fc == 6 and len(pdu) == 5:
            address, value = struct.unpack_from(">HH", pdu, 1)
            code = self.write_registers(address, [value])
            return pdu if code is None else bytes((0x86, code))
        if fc == 16 and len(pdu) >= 6:
            address, count, nbytes = struct.unpack_from(">HHB", pdu, 1)
            if not 1 <= count <= 123 or nbytes != 2 * count or len(pdu) != 6 + nbytes:
                return bytes((0x90, ILLEGAL_DATA_VALUE))
            values = list(struct.unpack_from(f">{count}H", pdu, 6))
            code = self.write_registers(address, values)
            return pdu[:5] if code is None else bytes((0x90, code))
        return bytes((fc | 0x80, ILLEGAL_FUNCTION))

    def read(self, address: int, count: int) -> list[int]:
        """Registers as a client would read them (for tests and tools)."""
        start = 2 * (address - BASE_ADDRESS)
        return list(struct.unpack_from(f">{count}H", self.image, start))

    def decode_point(self, model_id: int, name: str) -> Value:
        """Raw value of one point as it stands in the image."""
        point = self.point(model_id, name)
        return decode(
            point.type, self.read(self.address_of(model_id, name), point.size), 0, point.size
        )


# --------------------------------------------------------------------------- Modbus TCP


class _ModbusTcpProtocol(asyncio.Protocol):
    """MBAP framing for one client connection of one device."""

    def __init__(self, device: SimulatedInverter, connections: set[asyncio.Transport]) -> None:
        self._device = device
        self._connections = connections
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._connections.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        transport = self._transport
        assert transport is not None
        while len(buf) >= 8:
            tid, protocol, length, unit = struct.unpack_from(">HHHB", buf)
            if protocol != 0 or not 2 <= length <= 254:
                transport.close()  # not Modbus TCP: drop the connection
                buf.clear()
                return
            end = 6 + length
            if len(buf) < end:
                return
            response = self._device.handle_pdu(unit, bytes(buf[7:end]))
            del buf[:end]
            if self._device.unanswered > 0:  # fault injection: a request lost on the way
                self._device.unanswered -= 1
                continue
            transport.write(struct.pack(">HHHB", tid, 0, len(response) + 1, unit) + response)


@dataclass
class _Endpoint:
    device: SimulatedInverter
    port: int
    server: asyncio.Server | None = None
    connections: set[asyncio.Transport] = field(default_factory=set)


class InverterFleet:
    """N simulated inverters, device ``i`` on ``host:base_port + i``, one update loop.

    Use as ``async with InverterFleet(...) as fleet:``; ``fleet.devices[i]`` is the
    ``SimulatedInverter`` (its ``model`` the physics) for tests.
    """

    def __init__(
        self,
        count: int,
        base_port: int,
        *,
        host: str = "127.0.0.1",
        frequency: FrequencySource | None = None,
        ratings: InverterRatings | None = None,
        seed: int | None = None,
        update_hz: float = 10.0,
        droop_controls: int = DROOP_CONTROLS,
    ) -> None:
        rng = random.Random(seed)
        self.host = host
        self.frequency = frequency or StochasticFrequency(seed=seed)
        self.update_interval_s = 1.0 / update_hz
        self._endpoints: list[_Endpoint] = []
        for i in range(count):
            model = InverterModel(
                ratings=ratings or InverterRatings(),
                soc_pct=rng.uniform(20.0, 80.0),
                energy_import_wh=rng.uniform(1e5, 1e7),
                energy_export_wh=rng.uniform(1e5, 1e7),
                ambient_c=rng.uniform(20.0, 30.0),
            )
            device = SimulatedInverter(model, serial=f"SIM{i:06d}", droop_controls=droop_controls)
            self._endpoints.append(_Endpoint(device=device, port=base_port + i))
        self._updater: asyncio.Task[None] | None = None
        self._t0 = 0.0

    @property
    def devices(self) -> list[SimulatedInverter]:
        """The simulated devices, by index."""
        return [e.device for e in self._endpoints]

    def port(self, index: int) -> int:
        """TCP port of device ``index``."""
        return self._endpoints[index].port

    async def start(self) -> None:
        """Listen on every device's port and start the update loop."""
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        for i in range(len(self._endpoints)):
            await self.start_device(i)
        self._updater = asyncio.create_task(self._update_loop(), name="inverter-updates")

    async def start_device(self, index: int) -> None:
        """Put device ``index`` (back) on the network."""
        ep = self._endpoints[index]
        if ep.server is not None:
            return
        loop = asyncio.get_running_loop()
        ep.server = await loop.create_server(
            lambda: _ModbusTcpProtocol(ep.device, ep.connections),
            self.host,
            ep.port,
            reuse_address=True,
        )

    async def stop_device(self, index: int) -> None:
        """Take device ``index`` off the network: stop listening, drop its connections."""
        ep = self._endpoints[index]
        if ep.server is None:
            return
        ep.server.close()
        for transport in list(ep.connections):
            transport.abort()
        await ep.server.wait_closed()
        ep.server = None

    def set_ground_fault(self, index: int, faulted: bool) -> None:
        """Trip device ``index`` with a ground fault (or clear it); it shows at once."""
        device = self._endpoints[index].device
        device.model.ground_fault = faulted
        device.refresh(device.freq_hz)

    async def reboot_device(self, index: int) -> None:
        """Power-cycle device ``index``: off the network, controls to factory, back on."""
        await self.stop_device(index)
        self._endpoints[index].device.reboot()
        await self.start_device(index)

    async def stop(self) -> None:
        """Stop every device and the update loop."""
        if self._updater is not None:
            self._updater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._updater
            self._updater = None
        for i in range(len(self._endpoints)):
            await self.stop_device(i)

    async def __aenter__(self) -> InverterFleet:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def _update_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        tick = 0
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, self._t0 + tick * self.update_interval_s - loop.time()))
            now = loop.time()
            dt_s, last = now - last, now
            freq_hz = self.frequency.freq_hz(now - self._t0)
            for ep in self._endpoints:
                ep.device.step(dt_s, freq_hz)


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gridflex sim inverters``."""
    parser.add_argument("--count", type=int, default=1, help="number of inverters (default 1)")
    parser.add_argument("--base-port", type=int, default=5020, help="port of device 0")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--frequency-profile", type=Path, default=None, help="CSV t_s,freq_hz to replay"
    )
    parser.add_argument("--nominal-hz", type=float, default=50.0, help="50 or 60")
    parser.add_argument("--seed", type=int, default=None, help="seed for repeatable runs")
    parser.add_argument("--update-hz", type=float, default=10.0, help="physics update rate")
    parser.add_argument("--max-power-w", type=float, default=11_000.0, help="charge/discharge")
    parser.add_argument("--capacity-wh", type=float, default=60_000.0, help="battery capacity")
    parser.add_argument("--ramp-w-per-s", type=float, default=5_000.0, help="power ramp limit")
    parser.add_argument(
        "--ground-fault-after-s",
        type=float,
        default=None,
        help="trip device 0 with a ground fault (InvSt FAULT, Alrm GROUND_FAULT) after S s",
    )


async def _serve(args: argparse.Namespace, frequency: FrequencySource) -> None:
    ratings = InverterRatings(
        max_charge_w=args.max_power_w,
        max_discharge_w=args.max_power_w,
        capacity_wh=args.capacity_wh,
        ramp_w_per_s=args.ramp_w_per_s,
        nominal_hz=args.nominal_hz,
    )
    stop = stop_on_signals()
    fleet = InverterFleet(
        args.count,
        args.base_port,
        host=args.host,
        frequency=frequency,
        ratings=ratings,
        seed=args.seed,
        update_hz=args.update_hz,
    )
    async with fleet:
        log.info(
            "serving %d SunSpec inverters on %s:%d-%d",
            args.count,
            args.host,
            args.base_port,
            args.base_port + args.count - 1,
        )
        if args.ground_fault_after_s is not None:
            try:
                await asyncio.wait_for(stop.wait(), args.ground_fault_after_s)
            except TimeoutError:
                fleet.set_ground_fault(0, True)
                log.warning("device 0: ground fault (InvSt FAULT, Alrm GROUND_FAULT)")
        await stop.wait()
    log.info("inverter simulator stopped")


def main(args: argparse.Namespace) -> int:
    """Run ``gridflex sim inverters`` until SIGINT/SIGTERM; returns 0 after a clean stop."""
    if args.count < 1 or not 1 <= args.base_port <= 65536 - args.count:
        log.error("--count must be >= 1 and ports base-port..base-port+count-1 valid")
        return 2
    frequency: FrequencySource
    if args.frequency_profile is not None:
        try:
            frequency = FrequencyProfile.from_csv(args.frequency_profile)
        except ProfileError as exc:
            log.error("frequency profile: %s", exc)
            return 2
    else:
        frequency = StochasticFrequency(nominal_hz=args.nominal_hz, seed=args.seed)
    raise_open_file_limit()
    asyncio.run(_serve(args, frequency))
    return 0
