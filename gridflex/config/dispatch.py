"""Dispatch and control: ``[dispatch]`` (droop, FCR, EV defaults) and ``[control]``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from gridflex.config.base import _NonNegW, _Pct, _Section
from gridflex.config.errors import FieldError

__all__ = [
    "ControlConfig",
    "DispatchConfig",
    "DroopConfig",
    "DroopOverride",
    "EvDefaults",
    "FcrConfig",
]


_ResponseTimeS = Annotated[float, Field(ge=0.2, le=10.0)]


class DroopConfig(_Section):
    """IEEE 1547-2018 frequency-droop parameters (defaults: the standard's category defaults).

    ``db_*_hz`` are the dead bands below (under-frequency) and above (over-frequency)
    nominal; ``k_*`` the per-unit droop (0.05: full rated power at 5 % off nominal);
    ``response_time_s`` the open-loop response time (90 % of a step; 5 s default, 0.2 to
    10 s settable, IEEE 1547-2018 Table 24), programmed into devices that droop on their own
    (``[dispatch] local_droop``).
    """

    db_of_hz: Annotated[float, Field(ge=0.017, le=1.0)] = 0.036
    db_uf_hz: Annotated[float, Field(ge=0.017, le=1.0)] = 0.036
    k_of: Annotated[float, Field(ge=0.01, le=0.1)] = 0.05
    k_uf: Annotated[float, Field(ge=0.01, le=0.1)] = 0.05
    response_time_s: _ResponseTimeS = 5.0


class DroopOverride(_Section):
    """Per-asset droop parameters; what is not given comes from ``[dispatch.droop]``."""

    db_of_hz: Annotated[float, Field(ge=0.017, le=1.0)] | None = None
    db_uf_hz: Annotated[float, Field(ge=0.017, le=1.0)] | None = None
    k_of: Annotated[float, Field(ge=0.01, le=0.1)] | None = None
    k_uf: Annotated[float, Field(ge=0.01, le=0.1)] | None = None
    response_time_s: _ResponseTimeS | None = None


class FcrConfig(_Section):
    """Fleet frequency response (FCR): a symmetric capacity, full at ``full_at_hz`` off nominal."""

    capacity_w: _NonNegW = 0.0
    deadband_hz: Annotated[float, Field(ge=0, le=0.5)] = 0.010
    full_at_hz: Annotated[float, Field(gt=0, le=2.0)] = 0.200

    @model_validator(mode="after")
    def _order(self) -> FcrConfig:
        if self.full_at_hz <= self.deadband_hz:
            raise FieldError("full_at_hz", "expected above deadband_hz")
        return self


class EvDefaults(_Section):
    """Charging needs assumed for a car that states none, and the battery model's constants."""

    capacity_wh: Annotated[float, Field(gt=0)] = 60_000.0
    target_soc_pct: _Pct = 80.0
    dwell_h: Annotated[float, Field(gt=0, le=168)] = 8.0
    efficiency: Annotated[float, Field(gt=0, le=1)] = 0.92
    taper_soc_pct: _Pct = 80.0


class DispatchConfig(_Section):
    """Dispatch in stream: droop per asset or a fleet frequency response (FCR).

    ``min_step_w``: a new command only when the setpoint moves by at least this much;
    ``refresh_s``: a keep-alive command at least this often (shorter than the devices'
    reversion time); ``valid_s``: how long a command stays valid after it is issued.
    ``local_droop``: the control writer programs the droop curve into each device (SunSpec
    711, OCPP 2.1 ``LocalFrequency``) and the device responds on its own measurement; the
    pipeline's droop commands then carry the base setpoint only. It stacks on nothing but
    ``mode = "droop"`` (or ``"off"``): with ``"fcr"`` it would add a second response.
    """

    mode: Literal["off", "droop", "fcr"] = "off"
    local_droop: bool = False
    droop: DroopConfig = DroopConfig()
    fcr: FcrConfig = FcrConfig()
    ev_defaults: EvDefaults = EvDefaults()
    min_step_w: _NonNegW = 100.0
    refresh_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    valid_s: Annotated[float, Field(gt=0, le=3600)] = 15.0
    freq_max_age_ms: Annotated[int, Field(ge=100, le=60_000)] = 1000
    summary_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    forecast_interval_s: Annotated[float, Field(gt=0, le=3600)] = 1.0

    @model_validator(mode="after")
    def _refresh_within_validity(self) -> DispatchConfig:
        if self.valid_s <= self.refresh_s:
            raise ValueError("valid_s must be longer than refresh_s")
        if self.local_droop and self.mode == "fcr":
            raise ValueError(
                'local_droop = true needs mode = "droop" or "off": the devices\' own droop '
                "would add to the fcr response"
            )
        return self


class ControlConfig(_Section):
    """The control writer (``gridflex control``).

    ``watchdog_s``: an asset without a command for this long goes back to its
    ``default_setpoint_w`` (None: the devices' reversion time, ``max(2 x
    dispatch.refresh_s, 10)`` s). ``lost_after_failures``: a device the collector could not
    reach this many times in a row (nothing came back: status ``offline``) is a lost device,
    a fault latched until cleared; one that answers garbage (``error``) is not.
    ``queue_limit``: commands waiting per asset; beyond it the oldest is dropped and acked
    ``stale`` (a newer absolute setpoint supersedes it). ``telemetry_max_age_s``: readings
    older than this do not count for the SoC, the derating or the site's headroom.
    ``retention_days``: how long the ledger keeps command ids (longer than any validity).
    """

    watchdog_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    lost_after_failures: Annotated[int, Field(ge=1, le=1000)] = 3
    queue_limit: Annotated[int, Field(ge=1, le=10_000)] = 16
    telemetry_max_age_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    retention_days: Annotated[float, Field(ge=1, le=3650)] = 7.0
