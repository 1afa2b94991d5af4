"""Generate the machine-readable MQTT contract from the payload models.

``gridflex contract export [--out docs]`` writes ``docs/schemas/{name}.schema.json`` (JSON
Schema 2020-12, one per payload) and ``docs/asyncapi.json`` (AsyncAPI 3.0). The committed
files are checked against the models by ``tests/gridflex/test_contract_docs.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gridflex import __version__
from gridflex.contract import PAYLOADS, PREFIX

__all__ = ["CHANNELS", "add_arguments", "asyncapi_document", "main", "render", "schemas"]

#: channel id -> (address, payload schema, retained, description)
CHANNELS: dict[str, tuple[str, str, bool, str]] = {
    "telemetry": (
        PREFIX + "/{site}/{kind}/{asset}/telemetry",
        "telemetry/1",
        False,
        "One reading of one asset (kind: inverter or evse), QoS 1, every poll/meter value.",
    ),
    "status": (
        PREFIX + "/{site}/{kind}/{asset}/status",
        "status/1",
        True,
        "Retained asset status: online/offline, faults, capabilities.",
    ),
    "collectorStatus": (
        PREFIX + "/{site}/collector/{component}/status",
        "collector/1",
        True,
        "Retained collector presence; its last will says online=false.",
    ),
    "session": (
        PREFIX + "/{site}/evse/{asset}/session",
        "session/1",
        False,
        "A charging transaction started or ended (the CSMS): id, start/end, meter registers, "
        "SoC, the id token's SHA-256 (never the token). QoS 1.",
    ),
    "gridFrequency": (
        PREFIX + "/{site}/grid/frequency",
        "grid_frequency/1",
        False,
        "Grid frequency statistics per window (mean, min, max, deviation, RoCoF).",
    ),
    "forecast": (
        PREFIX + "/{site}/ev/{asset}/forecast",
        "forecast/1",
        False,
        "SoC forecast and flexibility envelope of one car or battery, once a second.",
    ),
    "command": (
        PREFIX + "/{site}/dispatch/{asset}/command",
        "command/1",
        False,
        "One absolute setpoint for one asset, with a deterministic command_id; after a reading "
        "whose decision moved by min_step_w, and a keep-alive every refresh_s.",
    ),
    "ack": (
        PREFIX + "/{site}/dispatch/{asset}/ack",
        "ack/1",
        False,
        "What the control writer did with a command: applied, clamped, rejected (reason), "
        "duplicate, stale, expired or failed; requested, applied and read-back watts.",
    ),
    "summary": (
        PREFIX + "/{site}/summary",
        "summary/1",
        True,
        "Site aggregate for a higher level (hierarchical scaling): online assets, power, "
        "flexibility, site frequency, requested/allocated response and shortfall; >= 1/s.",
    ),
    "target": (
        PREFIX + "/{site}/target",
        "target/1",
        True,
        "From `gridflex central` (through the site's broker bridge): the FCR capacity the "
        "site is to hold, its share of the fleet's by flexibility, until valid_until_ms.",
    ),
    "csmsSetpoint": (
        PREFIX + "/{site}/csms/{asset}/setpoint",
        "csms-setpoint/1",
        False,
        "Internal, control to the CSMS: program one EVSE (setpoint, local_frequency or "
        "clear) with a correlation id (the command_id); executed once per id, refused after "
        "valid_until_ms.",
    ),
    "csmsResult": (
        PREFIX + "/{site}/csms/{asset}/result",
        "csms-result/1",
        False,
        "Internal, the CSMS to control: the station's answer (accepted, rejected, refused, "
        "timeout, offline, error) and then, as read-back, the power of its next meter value.",
    ),
    "event": (
        PREFIX + "/{site}/event/{component}",
        "event/1",
        False,
        "A fault or notable event (fault code, asset, detail) from the component that "
        "detected it (control, the CSMS), with a unique event_id; the pipeline writes it "
        "to the events history. QoS 1.",
    ),
    "deadletter": (
        PREFIX + "/deadletter/{component}",
        "deadletter/1",
        False,
        "A refused input with the reason it was refused.",
    ),
}

_PARAM_DOCS = {
    "site": "Site id, [A-Za-z0-9_-]{1,64}.",
    "kind": "Asset kind: inverter or evse.",
    "asset": "Asset id, [A-Za-z0-9_-]{1,64}.",
    "component": "The component that refused the input, reported the event, or the collector.",
}


def _file_name(schema: str) -> str:
    return schema.replace("/", ".v") + ".schema.json"


def schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every payload, keyed by its ``schema`` value."""
    out: dict[str, dict[str, Any]] = {}
    for name, model in PAYLOADS.items():
        doc = model.model_json_schema(by_alias=True, mode="serialization")
        doc = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://gridflex.dev/schemas/{_file_name(name)}",
            **doc,
        }
        out[name] = doc
    return out


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the gridflex/v1 topic tree."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for channel_id, (address, schema, retained, description) in CHANNELS.items():
        message_id = schema.split("/")[0]
        messages[message_id] = {
            "name": schema,
            "contentType": "application/json",
            "payload": {"$ref": f"schemas/{_file_name(schema)}"},
        }
        params = [p.strip("{}") for p in address.split("/") if p.startswith("{")]
        channels[channel_id] = {
            "address": address,
            "description": description,
            "parameters": {p: {"description": _PARAM_DOCS[p]} for p in params},
            "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
            "bindings": {"mqtt": {"bindingVersion": "0.2.0"}},
        }
        operations[f"publish_{channel_id}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "bindings": {"mqtt": {"qos": 1, "retain": retained, "bindingVersion": "0.2.0"}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "gridflex MQTT contract",
            "version": f"v1 (gridflex {__version__})",
            "description": (
                "Topics and payloads of gridflex. Payloads are JSON objects with `schema`, "
                "`site`, `ts_ms` (UTC epoch ms); per-asset payloads carry `asset` and `seq`. "
                "power_w is + import/charging, - export/discharge."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "127.0.0.1:1883", "protocol": "mqtt", "protocolVersion": "3.1.1"}
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render() -> dict[str, str]:
    """Every generated file, relative path -> text (deterministic)."""
    files = {
        f"schemas/{_file_name(name)}": json.dumps(doc, indent=2, sort_keys=True) + "\n"
        for name, doc in schemas().items()
    }
    files["asyncapi.json"] = json.dumps(asyncapi_document(), indent=2) + "\n"
    return files


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gridflex contract export``."""
    parser.add_argument("--out", type=Path, default=Path("docs"), help="output folder (docs)")


def main(args: argparse.Namespace) -> int:
    """Write the generated contract files."""
    for rel, text in render().items():
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return 0
