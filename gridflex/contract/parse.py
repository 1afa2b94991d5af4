"""Every payload by its ``schema`` value, and parsing a payload by it."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from gridflex.contract.base import ContractError, Payload
from gridflex.contract.csms import CsmsRequest, CsmsResult
from gridflex.contract.event import EventReport
from gridflex.contract.payloads import (
    AssetStatus,
    CollectorStatus,
    DeadLetter,
    DispatchAck,
    DispatchCommand,
    Forecast,
    GridFrequency,
    SiteSummary,
    SiteTarget,
    Telemetry,
)
from gridflex.contract.session import ChargingSession

#: Every payload model, by its ``schema`` value.
PAYLOADS: dict[str, type[Payload]] = {
    "telemetry/1": Telemetry,
    "status/1": AssetStatus,
    "grid_frequency/1": GridFrequency,
    "forecast/1": Forecast,
    "command/1": DispatchCommand,
    "ack/1": DispatchAck,
    "session/1": ChargingSession,
    "summary/1": SiteSummary,
    "target/1": SiteTarget,
    "collector/1": CollectorStatus,
    "event/1": EventReport,
    "deadletter/1": DeadLetter,
    "csms-setpoint/1": CsmsRequest,
    "csms-result/1": CsmsResult,
}


def parse_payload(raw: bytes | str) -> Payload:
    """Parse and validate a JSON payload by its ``schema`` field.

    Raises ``ContractError`` with a one-line reason when the payload is not JSON, names no
    known schema, or does not validate.
    """
    from gridflex import jsonio

    try:
        obj: Any = jsonio.loads(raw)
    except ValueError as exc:
        raise ContractError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ContractError("payload is not a JSON object")
    schema = obj.get("schema")
    model = PAYLOADS.get(schema) if isinstance(schema, str) else None
    if model is None:
        raise ContractError(f"unknown schema {schema!r:.60}")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise ContractError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """Turn a pydantic error into one line: ``field: what was expected``."""
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
