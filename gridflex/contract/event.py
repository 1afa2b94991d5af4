"""Faults and other notable events: ``event/1`` on ``gridflex/v1/{site}/event/{component}``.

The process that detects a fault (``gridflex control``, the CSMS) publishes one per event
(QoS 1, not retained, :mod:`gridflex.events`); the pipeline writes them to the ``events``
history. ``event_id`` is unique per event: a redelivered message repeats it, and the
``events`` view keeps one row per id.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from gridflex.contract.base import ASSET_ID_PATTERN, AssetId, EpochMs, Payload, SiteId

__all__ = ["DETAIL_LIMIT", "EventReport"]

#: Longest ``detail`` a payload carries (the producer cuts longer texts).
DETAIL_LIMIT = 1024


class EventReport(Payload):
    """One fault or notable event, as the component that detected it reported it.

    ``fault_code`` is the standard code (``ISO_V2G_MSG_TIMEOUT``, ``Grid_Sync_Error``,
    ``0x04``, ``Max Capacity Reached``) or the device's own when it is none of them.
    """

    schema_: Literal["event/1"] = Field(default="event/1", alias="schema")
    site: SiteId
    component: Annotated[str, Field(pattern=ASSET_ID_PATTERN)] = Field(
        description="who detected it (control, collect-ocpp); the topic's last level"
    )
    asset: AssetId | None = Field(default=None, description="the asset, when it concerns one")
    ts_ms: EpochMs = Field(description="when the event was detected")
    event: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="what happened: fault, limit, ..."
    )
    fault_code: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    detail: Annotated[str, Field(max_length=DETAIL_LIMIT)] | None = None
    event_id: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        description="unique per event; a redelivery repeats it"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()
