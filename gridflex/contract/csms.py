"""The requests the control writer sends the CSMS and the CSMS's results."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gridflex.contract.base import AssetId, EpochMs, Payload, SiteId

CsmsRequestKind = Literal["setpoint", "local_frequency", "clear"]
"""What control asks the CSMS to do with one EVSE (``csms-setpoint/1`` ``kind``)."""

CsmsStatus = Literal["accepted", "rejected", "refused", "timeout", "offline", "error"]
"""What became of a request to the CSMS (``csms-result/1`` ``status``).

``accepted``/``rejected`` are the station's answer; ``refused``: not sent (``reason``:
e.g. discharge to a charge-only car, an expired request); ``timeout``: the station did not
answer in time; ``offline``: the station is not connected; ``error``: a CALLERROR or an
invalid answer.
"""


class FreqWattPoint(BaseModel):
    """One point of a frequency-watt curve (OCPP 2.1 ``V2XFreqWattPointType``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    freq_hz: Annotated[float, Field(gt=0, lt=100)]
    power_w: float = Field(description="power at that frequency, + charge, - discharge")


class CsmsRequest(Payload):
    """Control asks the CSMS to program one EVSE (internal, ``…/csms/{asset}/setpoint``).

    ``request_id`` correlates the answer (the dispatch command's ``command_id``) and makes
    the request idempotent: the CSMS executes an id once and answers a repeat with the same
    result. A request received after ``valid_until_ms`` is refused. ``kind``: ``setpoint``
    (``power_w`` absolute, + charge), ``local_frequency`` (OCPP 2.1 LocalFrequency profile:
    ``curve`` around the baseline ``power_w``, default 0) or ``clear`` (remove gridflex's
    profiles of the EVSE).
    """

    schema_: Literal["csms-setpoint/1"] = Field(default="csms-setpoint/1", alias="schema")
    site: SiteId
    asset: AssetId
    ts_ms: EpochMs = Field(description="when control made the request")
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    kind: CsmsRequestKind
    power_w: float | None = Field(
        default=None, description="setpoint (setpoint) or baseline (local_frequency), + charge"
    )
    valid_until_ms: EpochMs = Field(description="the request is refused when received later")
    hold_until_ms: EpochMs | None = Field(
        default=None,
        description="when the station drops the profile and falls back to its default (the "
        "profile's validTo: the device's own fail-safe); none = until replaced",
    )
    curve: Annotated[list[FreqWattPoint], Field(min_length=1, max_length=20)] | None = Field(
        default=None, description="frequency-watt curve for local_frequency, frequencies rising"
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> CsmsRequest:
        if self.kind == "setpoint" and self.power_w is None:
            raise ValueError("a setpoint request needs power_w")
        if self.kind == "local_frequency" and not self.curve:
            raise ValueError("a local_frequency request needs a curve")
        return self

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()


class CsmsResult(Payload):
    """The CSMS's answer to one ``csms-setpoint/1`` (internal, ``…/csms/{asset}/result``).

    Two messages per accepted request: ``phase`` ``answer`` as soon as the station answered
    the SetChargingProfile, then ``readback`` with the power of the station's next meter
    value after that answer (``measured_w``, absent when none came within twice the meter
    interval). Any other outcome has only the ``answer``.
    """

    schema_: Literal["csms-result/1"] = Field(default="csms-result/1", alias="schema")
    site: SiteId
    asset: AssetId
    ts_ms: EpochMs = Field(description="when the CSMS made this message")
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    kind: CsmsRequestKind
    phase: Literal["answer", "readback"]
    status: CsmsStatus
    reason: str | None = None
    requested_w: float | None = None
    sent_w: float | None = Field(
        default=None, description="setpoint or limit the profile carries, + charge"
    )
    operation_mode: str | None = Field(
        default=None,
        description="CentralSetpoint, ChargingOnly, LocalFrequency (OCPP 2.1) or Limit (2.0.1)",
    )
    purpose: str | None = Field(
        default=None, description="the profile's purpose: TxProfile or TxDefaultProfile"
    )
    ocpp_version: str | None = None
    station_id: str | None = None
    evse_id: Annotated[int, Field(ge=0)] | None = None
    answered_ms: EpochMs | None = Field(
        default=None, description="when the station's answer arrived at the CSMS"
    )
    measured_w: float | None = Field(
        default=None, description="power of the station's next meter value after the answer"
    )
    measured_ms: EpochMs | None = Field(default=None, description="that meter value's time")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_json(self) -> bytes:
        """Serialise with the ``schema`` alias."""
        return self.model_dump_json(exclude_none=True, by_alias=True).encode()
