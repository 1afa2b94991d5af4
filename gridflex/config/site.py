"""The site: its identity, limits, every section and its assets (:class:`SiteConfig`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from gridflex.config.assets import Asset, EvseAsset, InverterAsset
from gridflex.config.base import _AssetId, _FilePath, _Section
from gridflex.config.collectors import ModbusConfig, OcppConfig
from gridflex.config.connections import ApiConfig, MetricsConfig, MqttConfig
from gridflex.config.data import BillingConfig, HistoryConfig, PipelineConfig
from gridflex.config.dispatch import ControlConfig, DispatchConfig
from gridflex.config.errors import FieldError

__all__ = ["SiteConfig"]


class SiteConfig(_Section):
    """One site: its identity, broker, history and assets."""

    id: _AssetId
    nominal_frequency_hz: Literal[50, 60] = 50
    max_import_w: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="transformer import limit of the site; none = unlimited"
    )
    max_export_w: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="transformer export limit of the site; none = unlimited"
    )
    mqtt: MqttConfig = MqttConfig()
    history: HistoryConfig = HistoryConfig()
    modbus: ModbusConfig = ModbusConfig()
    pipeline: PipelineConfig = PipelineConfig()
    ocpp: OcppConfig = OcppConfig()
    dispatch: DispatchConfig = DispatchConfig()
    control: ControlConfig = ControlConfig()
    billing: BillingConfig = BillingConfig()
    api: ApiConfig | None = Field(
        default=None, description="the REST API of gridflex control; none = not served"
    )
    metrics: MetricsConfig = MetricsConfig()
    assets: list[Asset] = Field(default_factory=list)
    source: _FilePath | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_ids(self) -> SiteConfig:
        """Each id, each inverter endpoint and each station EVSE belongs to one asset."""
        first: dict[tuple[str, object], int] = {}
        for position, asset in enumerate(self.assets):
            checks: list[tuple[str, object, str]] = [
                ("id", asset.id, f"expected unique asset ids, {asset.id!r} appears twice")
            ]
            if isinstance(asset, InverterAsset):
                where = f"{asset.host.lower()}:{asset.port} unit_id {asset.unit_id}"
                expectation = f"expected one inverter asset per host:port:unit_id, {where} twice"
                checks.append(("host", where, expectation))
            else:
                expectation = (
                    f"expected one asset per station and evse_id, station {asset.station!r} "
                    f"evse_id {asset.evse_id} twice"
                )
                checks.append(("evse_id", (asset.station, asset.evse_id), expectation))
            for key, value, expectation in checks:
                earlier = first.setdefault((key, value), position)
                if earlier != position:
                    raise FieldError(
                        f"assets[{earlier}].{key} and assets[{position}].{key}",
                        f"{expectation} (assets counted from 0)",
                    )
        return self

    @property
    def inverters(self) -> list[InverterAsset]:
        """The SunSpec inverters of the site."""
        return [a for a in self.assets if isinstance(a, InverterAsset)]

    @property
    def evses(self) -> list[EvseAsset]:
        """The OCPP charging stations of the site."""
        return [a for a in self.assets if isinstance(a, EvseAsset)]
