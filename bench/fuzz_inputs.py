"""The malformed inputs of ``bench/fuzz.py`` and its tally (pure: a ``random.Random`` in, data out).

Each generator takes the campaign's ``random.Random`` and returns one input: an MQTT
``(topic, payload)``, an OCPP-J frame, a mangled Modbus reply, an HTTP request. Most are
a valid message with one thing broken (a field dropped, a wrong type, ``NaN``/``1e400``,
a huge string, deep nesting), the rest plain garbage (random bytes, truncated JSON, not
UTF-8). :class:`Tally` counts what each target got and answered, and :func:`table` prints
the campaign's tables.
"""

from __future__ import annotations

import base64
import json
import random
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SHARES",
    "TARGETS",
    "HttpRequest",
    "Tally",
    "Traffic",
    "http_request",
    "mangle_reply",
    "mqtt_input",
    "ocpp_frame",
    "quotas",
    "rate_table",
    "split_frames",
    "table",
]

TARGETS = ("mqtt", "ocpp", "modbus", "http")
#: Share of the inputs each target gets (Modbus inputs wait for the collector's polls).
SHARES = {"mqtt": 0.45, "ocpp": 0.3, "modbus": 0.01, "http": 0.24}
#: Booby traps every mutation may put in place of a value.
_WEIRD: tuple[Any, ...] = (
    None, True, 0, -1, 2**64, 1.5, "", "x" * 5000, [], {}, [[[[]]]], {"a": {"b": {}}},
    "NaN", "\u0000", "\ud83d\ude00", "2025-13-45T25:61:61Z", -(10**30),
)  # fmt: skip
_NONFINITE = ("NaN", "Infinity", "-Infinity", "1e400", "-1e400")


def quotas(n: int, shares: dict[str, float] = SHARES) -> dict[str, int]:
    """Split ``n`` inputs over the targets by ``shares``; the counts add up to ``n``."""
    counts = {t: int(n * s) for t, s in shares.items()}
    first = next(iter(shares))
    counts[first] += n - sum(counts.values())
    return counts


# --------------------------------------------------------------------------- mutation


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()


def _mutate_json(rng: random.Random, obj: dict[str, Any]) -> bytes:
    """``obj`` with one thing broken, encoded; or a broken encoding of ``obj``."""
    doc = dict(obj)
    keys = list(doc)
    how = rng.randrange(11)
    if how == 0 and keys:  # a required field missing
        del doc[rng.choice(keys)]
    elif how == 1 and keys:  # a field of the wrong type or out of range
        doc[rng.choice(keys)] = rng.choice(_WEIRD)
    elif how == 2 and keys:  # a number JSON has not, or a double has not
        key = rng.choice(keys)
        return _encode({**doc, key: "@@"}).replace(b'"@@"', rng.choice(_NONFINITE).encode())
    elif how == 3:  # an unknown field
        doc["zz_" + str(rng.randrange(100))] = 1
    elif how == 4:  # another schema, or none
        doc["schema"] = rng.choice(["telemetry/2", "ack/1", "command/1", "", None, 1])
    elif how == 5:  # truncated
        raw = _encode(doc)
        return raw[: rng.randrange(len(raw))]
    elif how == 6:  # deep nesting
        depth = rng.choice([100, 1_000, 100_000])
        return b"[" * depth + b"]" * rng.choice([0, depth])
    elif how == 7:  # not UTF-8
        broken = bytearray(_encode(doc))
        broken[rng.randrange(len(broken))] = rng.choice([0x80, 0xC3, 0xED, 0xFF])
        return bytes(broken)
    elif how == 8:  # JSON, not an object
        return _encode(rng.choice([[doc], 1, "x", None, True, []]))
    elif how == 9:  # random bytes
        return rng.randbytes(rng.randrange(200))
    else:  # oversized: a value of ~256 KB
        doc[rng.choice(keys) if keys else "x"] = "y" * 262_144
    return _encode(doc)


# --------------------------------------------------------------------------- MQTT


def _mqtt_templates(site: str, asset: str, kind: str, now_ms: int) -> dict[str, dict[str, Any]]:
    """A valid payload per topic leaf; commands and requests already expired (moves nothing)."""
    return {
        "telemetry": {
            "schema": "telemetry/1", "site": site, "asset": asset, "kind": kind,
            "ts_ms": now_ms, "seq": 1, "boot": "fuzz", "power_w": 100.0, "freq_hz": 50.0,
            "soc_pct": 50.0, "status": "idle",
        },
        "status": {
            "schema": "status/1", "site": site, "asset": "ghost", "kind": kind, "ts_ms": now_ms,
            "online": True, "state": "online",
        },
        "command": {
            "schema": "command/1", "site": site, "asset": asset, "ts_ms": now_ms - 10_000,
            "seq": 1, "command_id": f"fuzz-{now_ms}", "issued_ms": now_ms - 10_000,
            "setpoint_w": 0.0, "valid_until_ms": now_ms - 5_000, "mode": "droop",
            "reason": "fuzz",
        },
        "ack": {
            "schema": "ack/1", "site": site, "asset": asset, "ts_ms": now_ms, "seq": 1,
            "command_id": f"fuzz-{now_ms}", "result": "expired", "requested_w": 0.0,
            "issued_ms": now_ms - 10_000,
        },
        "setpoint": {
            "schema": "csms-setpoint/1", "site": site, "asset": asset, "ts_ms": now_ms,
            "request_id": f"fuzz-{now_ms}", "kind": "setpoint", "power_w": 0.0,
            "valid_until_ms": now_ms - 5_000,
        },
        "result": {
            "schema": "csms-result/1", "site": site, "asset": asset, "ts_ms": now_ms,
            "request_id": f"fuzz-{now_ms}", "kind": "setpoint", "phase": "answer",
            "status": "accepted",
        },
    }  # fmt: skip


def mqtt_input(
    rng: random.Random, site: str, assets: Sequence[tuple[str, str]], now_ms: int
) -> tuple[str, bytes]:
    """One malformed message on a topic some gridflex process subscribes to.

    ``assets`` are ``(asset id, kind)`` of the site; a made-up asset is added. Topics:
    telemetry and status (pipeline, control), command (control), ack (pipeline), the
    CSMS's setpoint requests and their results (CSMS, control), the CSMS's presence.
    """
    asset, kind = rng.choice([*assets, ("ghost", "inverter")])
    leaf = rng.choice(["telemetry", "telemetry", "status", "command", "ack", "setpoint",
                       "result", "presence"])  # fmt: skip
    prefix = f"gridflex/v1/{site}"
    topic = {
        "telemetry": f"{prefix}/{kind}/{asset}/telemetry",
        "status": f"{prefix}/{kind}/{asset}/status",
        "command": f"{prefix}/dispatch/{asset}/command",
        "ack": f"{prefix}/dispatch/{asset}/ack",
        "setpoint": f"{prefix}/csms/{asset}/setpoint",
        "result": f"{prefix}/csms/{asset}/result",
        "presence": f"{prefix}/collector/ocpp/status",
    }[leaf]
    if leaf == "presence":  # what control reads leniently: online flag of the CSMS
        template: dict[str, Any] = {"schema": "collector/1", "online": True, "ts_ms": now_ms}
    else:
        template = _mqtt_templates(site, asset, kind, now_ms)[leaf]
    return topic, _mutate_json(rng, template)


# --------------------------------------------------------------------------- OCPP


_METER_VALUE = {
    "timestamp": "2025-01-01T12:00:00.000Z",
    "sampledValue": [
        {"value": 7400.0, "measurand": "Power.Active.Import"},
        {"value": 12.5, "measurand": "Energy.Active.Import.Register"},
        {"value": 55, "measurand": "SoC", "location": "EV"},
    ],
}
_OCPP_PAYLOADS: dict[str, dict[str, Any]] = {
    "BootNotification": {
        "chargingStation": {"model": "Fuzz", "vendorName": "gridflex"},
        "reason": "PowerUp",
    },
    "Heartbeat": {},
    "StatusNotification": {
        "timestamp": "2025-01-01T12:00:00Z",
        "connectorStatus": "Available",
        "evseId": 1,
        "connectorId": 1,
    },
    "Authorize": {"idToken": {"idToken": "04A1B2C3", "type": "ISO14443"}},
    "MeterValues": {"evseId": 1, "meterValue": [_METER_VALUE]},
    "TransactionEvent": {
        "eventType": "Updated",
        "timestamp": "2025-01-01T12:00:00.000Z",
        "triggerReason": "MeterValuePeriodic",
        "seqNo": 3,
        "transactionInfo": {"transactionId": "fuzz-tx", "chargingState": "Charging"},
        "evse": {"id": 1, "connectorId": 1},
        "meterValue": [_METER_VALUE],
    },
    "NotifyEVChargingNeeds": {
        "evseId": 1,
        "chargingNeeds": {
            "requestedEnergyTransfer": "AC_three_phase",
            "acChargingParameters": {
                "energyAmount": 20000, "evMinCurrent": 6, "evMaxCurrent": 16, "evMaxVoltage": 230,
            },
        },
    },
}  # fmt: skip


def _deep_mutate(rng: random.Random, node: Any) -> Any:
    """``node`` (a JSON document) with one value somewhere inside replaced or dropped."""
    if isinstance(node, dict) and node and rng.random() < 0.7:
        key = rng.choice(list(node))
        copy = dict(node)
        if rng.random() < 0.2:
            del copy[key]
        else:
            copy[key] = _deep_mutate(rng, node[key])
        return copy
    if isinstance(node, list) and node and rng.random() < 0.7:
        index = rng.randrange(len(node))
        return [_deep_mutate(rng, v) if i == index else v for i, v in enumerate(node)]
    return rng.choice(_WEIRD)


def ocpp_frame(rng: random.Random, seq: int) -> str | bytes:
    """One malformed (or unroutable) OCPP-J frame; ``seq`` makes message ids unique."""
    uid = f"fz{seq}"
    how = rng.randrange(12)
    action = rng.choice(list(_OCPP_PAYLOADS))
    payload = _OCPP_PAYLOADS[action]
    if how <= 3:  # a handled action with a payload broken somewhere inside
        return json.dumps([2, uid, action, _deep_mutate(rng, payload)], allow_nan=True)
    if how == 4:  # an action nobody handles, or none of OCPP's
        other = rng.choice(["DataTransfer", "Get15118EVCertificate", "NoSuchAction", "", "x" * 300])
        return json.dumps([2, uid, other, {}])
    if how == 5:  # the wrong shape
        return json.dumps(
            rng.choice([
                [2, uid, action], [2, uid, action, payload, 1], [2, uid], [2], [],
                [2, 5, action, payload], [2, "", action, payload], [2, "u" * 37, action, payload],
                [2, uid, 5, payload], [2, uid, action, [payload]], [9, uid, action, payload],
                ["2", uid, action, payload], [2.5, uid, action, payload], [6, uid, action, payload],
            ])
        )  # fmt: skip
    if how == 6:  # an answer to a CALL the CSMS never made
        return json.dumps(rng.choice([[3, uid, {}], [4, uid, "InternalError", "x", {}], [3, uid]]))
    if how == 7:  # not JSON, or not text
        garbage: list[str | bytes] = [rng.randbytes(rng.randrange(100)), "[2,", "", "null", "\x00"]
        return rng.choice(garbage)
    if how == 8:  # deep nesting inside a payload
        depth = rng.choice([150, 250, 10_000])
        return f'[2,"{uid}","{action}",{{"a":' + "[" * depth + "]" * depth + "}]"
    if how == 9:  # oversized (under the 1 MiB WebSocket limit)
        return json.dumps([2, uid, "DataTransfer", {"vendorId": "x", "data": "y" * 300_000}])
    if how == 10:  # a number JSON has not
        text = json.dumps([2, uid, action, payload])
        return text.replace("7400.0", rng.choice(_NONFINITE)).replace("12.5", "1e400")
    return json.dumps([2, uid, action, payload]).encode()  # a binary frame


# --------------------------------------------------------------------------- Modbus


def split_frames(buffer: bytearray) -> list[bytes]:
    """Take the complete Modbus TCP frames off the front of ``buffer`` (left: the rest).

    A header that is not Modbus TCP (an impossible length) takes the whole buffer as one
    frame: the proxy passes what it cannot parse through unchanged.
    """
    frames = []
    while len(buffer) >= 7:
        (length,) = struct.unpack_from(">H", buffer, 4)
        if not 2 <= length <= 254:
            frames.append(bytes(buffer))
            buffer.clear()
            break
        end = 6 + length
        if len(buffer) < end:
            break
        frames.append(bytes(buffer[:end]))
        del buffer[:end]
    return frames


def mangle_reply(rng: random.Random, reply: bytes) -> bytes:
    """A broken version of the Modbus TCP reply ``reply`` (MBAP header + PDU)."""
    tid, _protocol, length, unit = struct.unpack_from(">HHHB", reply)
    pdu = reply[7:]
    how = rng.randrange(11)
    if how == 0:  # another transaction's reply
        return struct.pack(">HHHB", (tid + 1 + rng.randrange(100)) & 0xFFFF, 0, length, unit) + pdu
    if how == 1:  # another unit's reply
        return struct.pack(">HHHB", tid, 0, length, (unit + 1) & 0xFF) + pdu
    if how == 2:  # not Modbus TCP: a protocol id other than 0
        return struct.pack(">HHHB", tid, rng.randrange(1, 0x10000), length, unit) + pdu
    if how == 3:  # an MBAP length that is impossible
        return struct.pack(">HHHB", tid, 0, rng.choice([0, 1, 255, 0xFFFF]), unit) + pdu
    if how == 4:  # an exception response
        code = rng.choice([1, 2, 3, 4, 6, 11, 0, 255])
        return struct.pack(">HHHBBB", tid, 0, 3, unit, (pdu[0] | 0x80) if pdu else 0x83, code)
    if how == 5:  # the wrong function code
        return reply[:7] + bytes([rng.choice([1, 4, 16, 0x83, 0])]) + pdu[1:]
    if how == 6:  # a byte count that does not match the data
        count = ((pdu[1] if len(pdu) > 1 else 0) + 1 + rng.randrange(255)) & 0xFF
        body = pdu[:1] + bytes([count]) + pdu[2:]
        return reply[:7] + body
    if how == 7:  # truncated: the rest never comes (the request times out)
        return reply[: rng.randrange(1, len(reply))]
    if how == 8:  # trailing garbage after the reply
        return reply + rng.randbytes(rng.randrange(1, 20))
    if how == 9:  # the reply twice
        return reply + reply
    return rng.randbytes(rng.randrange(1, 40))  # plain garbage


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class HttpRequest:
    """One request to the REST API; ``authorized``: it carries the right token."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes | None
    authorized: bool


def http_request(rng: random.Random, token: str) -> HttpRequest:
    """One malformed request to the API, with the token, a wrong one or none."""
    auth = rng.choice(["right", "right", "none", "wrong", "basic"])
    headers = {
        "right": {"Authorization": f"Bearer {token}"},
        "none": {},
        "wrong": {"Authorization": f"Bearer {token[:-1]}x"},
        "basic": {"Authorization": "Basic " + base64.b64encode(token.encode()).decode()},
    }[auth]
    how = rng.randrange(5)
    body: bytes | None
    if how <= 1:  # dispatch to a made-up asset, broken somewhere (a valid one gets 404)
        path, method = "/api/v1/dispatch", "POST"
        body = _mutate_json(rng, {"asset": "inv-999", "setpoint_w": -5000.0,
                                  "transaction_id": "fuzz-1", "valid_for_s": 5})  # fmt: skip
    elif how == 2:
        path, method = "/api/v1/charge-profile", "POST"
        body = _mutate_json(
            rng,
            {"asset": "inv-999", "profile_id": "fuzz-1", "valid_from": "2025-01-01T00:00:00Z",
             "valid_to": "2025-01-01T01:00:00Z", "max_charge_kw": 5.0, "max_discharge_kw": 3.0,
             "soc_min_pct": 20.0, "soc_max_pct": 80.0},
        )  # fmt: skip
    elif how == 3:  # a path below the API, maybe no route
        tail = "".join(rng.choice("abc-_.%20/~09") for _ in range(rng.randrange(30)))
        route = rng.choice(["charge-profile", "dispatch", "assets", "nope", "assets/inv-999"])
        path = f"/api/v1/{route}/{tail}"
        method = rng.choice(["GET", "DELETE", "POST", "PUT", "PATCH"])
        body = rng.choice([None, b"", b"{}", rng.randbytes(50)])
    else:  # garbage to a POST route
        path, method = rng.choice(["/api/v1/dispatch", "/api/v1/charge-profile"]), "POST"
        body = rng.randbytes(rng.randrange(300))
    if body is not None:
        headers = {**headers, "Content-Type": rng.choice(["application/json", "text/plain"])}
    return HttpRequest(method, path, headers, body, auth == "right")


# --------------------------------------------------------------------------- tally


@dataclass
class Tally:
    """What one target was sent and how it answered."""

    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0

    def note(self, answer: str) -> None:
        """Count one answer (``CALLERROR FormatViolation``, ``HTTP 422``, ``no answer``...)."""
        self.answers[answer] += 1

    def count(self, predicate: Callable[[str], bool]) -> int:
        """How many answers match ``predicate``."""
        return sum(n for answer, n in self.answers.items() if predicate(answer))


@dataclass(frozen=True)
class Traffic:
    """Valid traffic in one window: history rows, acks, Modbus replies relayed unchanged."""

    seconds: float
    telemetry: int
    acks: int
    relayed: int = 0

    def rate(self, count: int) -> float:
        """``count`` per second in this window."""
        return count / self.seconds if self.seconds > 0 else 0.0


def _http(answer: str, low: int, high: int) -> bool:
    return answer.startswith("HTTP ") and low <= int(answer.split()[1]) < high


def table(
    tallies: dict[str, Tally], crashes: dict[str, int], *, total_crashes: int | None = None
) -> list[str]:
    """The per-target table (markdown lines): inputs, crashes, dead letters, answers.

    ``crashes``: processes that died among those each target reaches; ``total_crashes``:
    how many died in all (a process fed by two targets counts once), default their sum.
    """
    lines = [
        "| target | inputs | crashes | dead letters | CALLERRORs | HTTP 4xx | HTTP 5xx |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for target, tally in tallies.items():
        callerrors = tally.count(lambda a: a.startswith("CALLERROR"))
        lines.append(
            f"| {target} | {tally.sent:,} | {crashes.get(target, 0)} | {tally.dead_letters:,} "
            f"| {callerrors:,} | {tally.count(lambda a: _http(a, 400, 500)):,} "
            f"| {tally.count(lambda a: _http(a, 500, 600)):,} |"
        )
    total = Tally(sent=sum(t.sent for t in tallies.values()))
    for tally in tallies.values():
        total.answers.update(tally.answers)
        total.dead_letters += tally.dead_letters
    lines.append(
        f"| **total** | {total.sent:,} "
        f"| {sum(crashes.values()) if total_crashes is None else total_crashes} "
        f"| {total.dead_letters:,} "
        f"| {total.count(lambda a: a.startswith('CALLERROR')):,} "
        f"| {total.count(lambda a: _http(a, 400, 500)):,} "
        f"| {total.count(lambda a: _http(a, 500, 600)):,} |"
    )
    return lines


def rate_table(before: Traffic, during: Traffic) -> list[str]:
    """Valid traffic before and during the campaign (markdown lines), per second."""
    return [
        "| valid traffic | before /s | during /s | during / before |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {name} | {before.rate(b):.1f} | {during.rate(d):.1f} | "
            f"{(during.rate(d) / before.rate(b) if before.rate(b) else 0.0):.2f} |"
            for name, b, d in (
                ("telemetry rows into the history", before.telemetry, during.telemetry),
                ("acks into the history", before.acks, during.acks),
                ("Modbus replies relayed unchanged", before.relayed, during.relayed),
            )
        ),
    ]
