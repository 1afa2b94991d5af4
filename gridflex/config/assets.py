"""The site's assets (``[[assets]]``): SunSpec inverters and OCPP EVSEs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from gridflex.config.base import _AssetId, _NonNegW, _Pct, _Section
from gridflex.config.dispatch import DroopOverride
from gridflex.config.errors import FieldError

__all__ = ["Asset", "EvseAsset", "InverterAsset"]


class _AssetBase(_Section):
    id: _AssetId
    max_charge_w: _NonNegW
    max_discharge_w: _NonNegW = 0.0
    capacity_wh: Annotated[float, Field(gt=0)] | None = None
    soc_min_pct: _Pct = 10.0
    soc_max_pct: _Pct = 90.0
    base_setpoint_w: float = Field(
        default=0.0, description="the schedule the frequency response is added to, + charge"
    )
    droop: DroopOverride | None = None
    ramp_w_per_s: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="largest setpoint change per second the writer allows"
    )
    default_setpoint_w: float = Field(
        default=0.0,
        description="where the watchdog and the device's reversion timer put the asset",
    )

    @model_validator(mode="after")
    def _soc_order(self) -> Any:
        if self.soc_min_pct >= self.soc_max_pct:
            raise FieldError(
                "soc_min_pct",
                f"expected below soc_max_pct ({self.soc_max_pct:g}), got {self.soc_min_pct:g}",
            )
        for name in ("base_setpoint_w", "default_setpoint_w"):
            value = getattr(self, name)
            if not -self.max_discharge_w <= value <= self.max_charge_w:
                raise FieldError(
                    name,
                    f"expected within -max_discharge_w..max_charge_w "
                    f"({-self.max_discharge_w:g}..{self.max_charge_w:g}), got {value:g}",
                )
        return self


class InverterAsset(_AssetBase):
    """A bidirectional inverter (with battery) read over SunSpec Modbus TCP."""

    kind: Literal["inverter"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit_id: Annotated[int, Field(ge=0, le=247)] = 1


class EvseAsset(_AssetBase):
    """One EVSE of a charging station that connects to gridflex's CSMS over OCPP.

    A station with several EVSEs is several assets with the same ``station_id`` and their
    own ``evse_id`` (OCPP 2.x numbers the EVSEs of a station from 1); their ``password``
    and ``station_max_w`` must agree.
    """

    kind: Literal["evse"]
    station_id: Annotated[str, Field(min_length=1, max_length=48)] | None = None
    evse_id: Annotated[int, Field(ge=1, le=99)] = Field(
        default=1, description="the EVSE's number within its station (OCPP evseId)"
    )
    station_max_w: _NonNegW | None = Field(
        default=None,
        description="limit of the station's EVSEs together, sent as a "
        "ChargingStationMaxProfile (evseId 0); none = not sent",
    )
    password: Annotated[str, Field(min_length=16, max_length=40)] | None = Field(
        default=None, description="HTTP Basic auth password (OCPP: 16 to 40 characters)"
    )

    @property
    def station(self) -> str:
        """The OCPP station identity (the last path segment of its WebSocket URL)."""
        return self.station_id or self.id


Asset = Annotated[InverterAsset | EvseAsset, Field(discriminator="kind")]
