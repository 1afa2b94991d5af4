"""The physics and control state of one simulated inverter (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from simulators.droop import (
    DroopParams,
    droop_delta_w,
    first_order_step,
    time_constant_s,
)


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
