"""The pure helpers of bench/fuzz.py: quotas, inputs, Modbus framing and mangling, tables."""

from __future__ import annotations

import random
import struct

import pytest

from bench.fuzz_inputs import (
    SHARES,
    Tally,
    Traffic,
    http_request,
    mangle_reply,
    mqtt_input,
    ocpp_frame,
    quotas,
    rate_table,
    split_frames,
    table,
)
from collectors.ocpp.requests import request_filter
from control.ocpp import result_filter
from control.service import command_filter
from pipelines.flow import pipeline_filters

SITE = "demo"
ASSETS = [("inv-001", "inverter"), ("cs-001", "evse")]


def _matches(topic_filter: str, topic: str) -> bool:
    parts, levels = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(parts) == len(levels)


def _reply(tid: int, unit: int, values: list[int]) -> bytes:
    pdu = bytes([3, 2 * len(values)]) + struct.pack(f">{len(values)}H", *values)
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


@pytest.mark.parametrize("n", [1, 7, 5_000, 100_000])
def test_quotas_add_up_to_n_in_the_shares(n: int) -> None:
    counts = quotas(n)
    assert sum(counts.values()) == n
    assert set(counts) == set(SHARES)
    for target, share in SHARES.items():
        assert abs(counts[target] - n * share) <= len(SHARES)


def test_every_mqtt_input_goes_to_a_topic_a_gridflex_process_subscribes_to() -> None:
    filters = [
        *pipeline_filters(SITE),
        command_filter(SITE),
        request_filter(SITE),
        result_filter(SITE),
        f"gridflex/v1/{SITE}/+/+/telemetry",
        f"gridflex/v1/{SITE}/+/+/status",
        f"gridflex/v1/{SITE}/collector/ocpp/status",
    ]
    rng = random.Random(3)
    leaves = set()
    for _ in range(500):
        topic, payload = mqtt_input(rng, SITE, ASSETS, 1_700_000_000_000)
        assert any(_matches(f, topic) for f in filters), topic
        assert isinstance(payload, bytes)
        leaves.add(topic.rsplit("/", 1)[-1])
    assert leaves == {"telemetry", "status", "command", "ack", "setpoint", "result"}


def test_inputs_are_the_same_for_the_same_seed() -> None:
    def draw(seed: int) -> list[object]:
        rng = random.Random(seed)
        return [
            *(mqtt_input(rng, SITE, ASSETS, 1) for _ in range(50)),
            *(ocpp_frame(rng, i) for i in range(50)),
            *(http_request(rng, "token-1") for _ in range(50)),
        ]

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


def test_split_frames_reassembles_chunks_and_keeps_the_rest() -> None:
    a, b = _reply(1, 1, [7, 8]), _reply(2, 1, [9])
    buffer = bytearray(a + b[:5])
    assert split_frames(buffer) == [a]
    assert bytes(buffer) == b[:5]
    buffer += b[5:]
    assert split_frames(buffer) == [b]
    assert buffer == bytearray()


def test_split_frames_passes_a_stream_that_is_not_modbus_through_whole() -> None:
    buffer = bytearray(b"\x00\x01\x00\x00\xff\xff\x01garbage")
    assert split_frames(buffer) == [b"\x00\x01\x00\x00\xff\xff\x01garbage"]
    assert buffer == bytearray()


def test_a_mangled_reply_is_never_the_reply() -> None:
    rng = random.Random(1)
    reply = _reply(40, 1, [1, 2, 3])
    mangled = [mangle_reply(rng, reply) for _ in range(2_000)]
    assert reply not in mangled
    assert len(set(mangled)) > 100


def test_http_requests_are_authorized_only_with_the_bearer_token() -> None:
    rng = random.Random(2)
    requests = [http_request(rng, "tok-123") for _ in range(300)]
    for request in requests:
        has_token = request.headers.get("Authorization") == "Bearer tok-123"
        assert request.authorized == has_token
    assert {r.authorized for r in requests} == {True, False}


def test_table_counts_answers_per_target_and_in_total() -> None:
    ocpp = Tally(sent=10, dead_letters=4)
    for answer in ["CALLERROR FormatViolation"] * 3 + ["CALLERROR InternalError", "CALLRESULT"]:
        ocpp.note(answer)
    api = Tally(sent=5)
    for answer in ["HTTP 401", "HTTP 422", "HTTP 404", "HTTP 500", "HTTP 200"]:
        api.note(answer)
    lines = table({"ocpp": ocpp, "http": api}, {"ocpp": 0, "http": 1}, total_crashes=1)
    assert lines[2] == "| ocpp | 10 | 0 | 4 | 4 | 0 | 0 |"
    assert lines[3] == "| http | 5 | 1 | 0 | 0 | 3 | 1 |"
    assert lines[4] == "| **total** | 15 | 1 | 4 | 4 | 3 | 1 |"


def test_rate_table_gives_rates_and_their_ratio() -> None:
    lines = rate_table(Traffic(10.0, 500, 20, 300), Traffic(20.0, 900, 0, 600))
    assert lines[2] == "| telemetry rows into the history | 50.0 | 45.0 | 0.90 |"
    assert lines[3] == "| acks into the history | 2.0 | 0.0 | 0.00 |"
    assert lines[4] == "| Modbus replies relayed unchanged | 30.0 | 30.0 | 1.00 |"
    assert Traffic(0.0, 5, 5).rate(5) == 0.0
