"""One simulated device: the register map's constants and ``SimulatedInverter``.

A SunSpec register image in front of the physics (``simulators.inverter.model``), and
``handle_pdu`` for Modbus function codes 3, 6, 16 and 23 (Read/Write Multiple Registers,
unless built with ``read_write=False``: a device that answers it with exception 1, illegal
function); see the package docstring.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from gridflex.sunspec.codec import Value, decode, unscale
from gridflex.sunspec.discovery import SUNS_MARKER
from gridflex.sunspec.sign import power_w_from_sunspec, sunspec_w_from_power_w
from gridflex.sunspec.tables import ModelTable, Point, load_model
from simulators.droop import (
    ADOPT_COMPLETED,
    DroopScale,
    droop_state,
)
from simulators.inverter.model import InverterModel

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
        read_write: bool = True,
    ) -> None:
        if not 1 <= droop_controls <= 10:
            raise ValueError(f"droop_controls: expected 1..10, got {droop_controls!r}")
        self.model = model
        self.unit_id = unit_id
        self.serial = serial
        self.droop_controls = droop_controls
        #: Whether the device serves function 23 (else: exception 1, illegal function).
        self.read_write = read_write
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
        if fc == 23 and len(pdu) >= 10 and self.read_write:
            return self._read_write(pdu)
        return bytes((fc | 0x80, ILLEGAL_FUNCTION))

    def _read_write(self, pdu: bytes) -> bytes:
        """Function 23: write, then read (Modbus spec 6.17), one response."""
        read_address, read_count, write_address, count, nbytes = struct.unpack_from(
            ">HHHHB", pdu, 1
        )
        if (
            not 1 <= read_count <= 125
            or not 1 <= count <= 121
            or nbytes != 2 * count
            or len(pdu) != 10 + nbytes
        ):
            return bytes((0x97, ILLEGAL_DATA_VALUE))
        if read_address < BASE_ADDRESS or read_address + read_count > self.end_address:
            return bytes((0x97, ILLEGAL_DATA_ADDRESS))
        code = self.write_registers(write_address, list(struct.unpack_from(f">{count}H", pdu, 10)))
        if code is not None:
            return bytes((0x97, code))
        start = 2 * (read_address - BASE_ADDRESS)
        return bytes((23, 2 * read_count)) + self.image[start : start + 2 * read_count]

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
