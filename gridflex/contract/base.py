"""What every contract module shares: the prefix, identifiers, errors, the payloads' base."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

PREFIX = "gridflex/v1"
ASSET_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

AssetKind = Literal["inverter", "evse"]
AssetId = Annotated[str, Field(pattern=ASSET_ID_PATTERN)]
SiteId = Annotated[str, Field(pattern=ASSET_ID_PATTERN)]
EpochMs = Annotated[int, Field(ge=0, description="UTC epoch milliseconds")]


class ContractError(ValueError):
    """A topic or payload that does not follow the contract."""


class Payload(BaseModel):
    """Base for every payload: strict field names, no extras accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> bytes:
        """Serialise to compact JSON bytes, leaving out fields that are ``None``."""
        return self.model_dump_json(exclude_none=True).encode()
