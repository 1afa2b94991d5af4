"""The CSMS's charging sessions: ``session/1`` on ``gridflex/v1/{site}/evse/{asset}/session``.

The CSMS (``gridflex collect ocpp``) publishes one when an OCPP transaction starts and one
when it ends (QoS 1, not retained); the pipeline writes them to the ``transactions``
history. The id token is never published: only its SHA-256 (:func:`hash_id_token`).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from gridflex.contract.base import AssetId, EpochMs, Payload, SiteId

__all__ = ["ChargingSession", "SessionEvent", "hash_id_token"]

SessionEvent = Literal["started", "ended"]

_Wh = Annotated[float, Field(ge=0)]
_Pct = Annotated[float, Field(ge=0, le=100)]


def hash_id_token(id_token: str, token_type: str | None = None) -> str:
    """The lowercase hex SHA-256 of an OCPP ``idToken`` (``type:token`` when typed)."""
    text = f"{token_type}:{id_token}" if token_type else id_token
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ChargingSession(Payload):
    """A charging transaction started or ended, as the CSMS saw it.

    ``meter_*`` are the EVSE's energy registers (``Energy.Active.Import.Register`` and
    ``...Export...``) at the transaction's first and last meter value, when the station sent
    them; ``soc_*`` likewise for ``SoC``. ``ended`` repeats what ``started`` said.
    """

    schema_: Literal["session/1"] = Field(default="session/1", alias="schema")
    site: SiteId
    asset: AssetId
    ts_ms: EpochMs = Field(description="when the CSMS made this message")
    event: SessionEvent
    transaction_id: Annotated[str, Field(min_length=1, max_length=64)]
    start_ms: EpochMs = Field(description="the transaction's first event (station time)")
    end_ms: EpochMs | None = Field(default=None, description="its Ended event; absent before")
    meter_start_wh: _Wh | None = None
    meter_stop_wh: _Wh | None = None
    export_start_wh: _Wh | None = None
    export_stop_wh: _Wh | None = None
    soc_start_pct: _Pct | None = None
    soc_end_pct: _Pct | None = None
    id_token_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None, description="SHA-256 (hex) of the id token; the token is never sent"
    )
    stopped_reason: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="OCPP stoppedReason of the Ended event"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()
