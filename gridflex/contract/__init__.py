"""The MQTT contract, version 1: topics and payload models.

Every message gridflex publishes is one of the models below, serialised as a JSON object
whose ``schema`` field names the model and its version (``"telemetry/1"``). The JSON Schema
documents in ``docs/schemas/`` and the AsyncAPI document ``docs/asyncapi.yaml`` are generated
from these models (``gridflex contract export``); a test keeps them in step.

Sign convention, written once: ``power_w`` is + for import/charging and - for
export/discharge. Timestamps on the wire are UTC epoch milliseconds.
"""

from __future__ import annotations

from gridflex.contract.base import ASSET_ID_PATTERN, PREFIX, AssetKind, ContractError, Payload
from gridflex.contract.csms import (
    CsmsRequest,
    CsmsRequestKind,
    CsmsResult,
    CsmsStatus,
    FreqWattPoint,
)
from gridflex.contract.event import DETAIL_LIMIT, EventReport
from gridflex.contract.parse import PAYLOADS, describe_validation_error, parse_payload
from gridflex.contract.payloads import (
    ACK_RESULTS,
    DEAD_LETTER_LIMIT,
    TELEMETRY_STATUSES,
    AckResult,
    AssetStatus,
    Capabilities,
    CollectorStatus,
    DeadLetter,
    DispatchAck,
    DispatchCommand,
    DispatchMode,
    EvChargingNeeds,
    Forecast,
    GridFrequency,
    SiteSummary,
    SiteTarget,
    Telemetry,
    TelemetryStatus,
)
from gridflex.contract.session import ChargingSession, SessionEvent, hash_id_token
from gridflex.contract.topics import (
    ack_topic,
    collector_topic,
    command_topic,
    csms_request_topic,
    csms_result_topic,
    deadletter_topic,
    event_filter,
    event_topic,
    forecast_topic,
    grid_frequency_topic,
    is_retained_topic,
    parse_topic,
    session_topic,
    status_topic,
    summary_topic,
    target_topic,
    telemetry_topic,
)

__all__ = [
    "ACK_RESULTS",
    "ASSET_ID_PATTERN",
    "DEAD_LETTER_LIMIT",
    "DETAIL_LIMIT",
    "PAYLOADS",
    "PREFIX",
    "TELEMETRY_STATUSES",
    "AckResult",
    "AssetKind",
    "AssetStatus",
    "Capabilities",
    "ChargingSession",
    "CollectorStatus",
    "ContractError",
    "CsmsRequest",
    "CsmsRequestKind",
    "CsmsResult",
    "CsmsStatus",
    "DeadLetter",
    "DispatchAck",
    "DispatchCommand",
    "DispatchMode",
    "EvChargingNeeds",
    "EventReport",
    "Forecast",
    "FreqWattPoint",
    "GridFrequency",
    "Payload",
    "SessionEvent",
    "SiteSummary",
    "SiteTarget",
    "Telemetry",
    "TelemetryStatus",
    "ack_topic",
    "collector_topic",
    "command_topic",
    "csms_request_topic",
    "csms_result_topic",
    "deadletter_topic",
    "describe_validation_error",
    "event_filter",
    "event_topic",
    "forecast_topic",
    "grid_frequency_topic",
    "hash_id_token",
    "is_retained_topic",
    "parse_payload",
    "parse_topic",
    "session_topic",
    "status_topic",
    "summary_topic",
    "target_topic",
    "telemetry_topic",
]
