"""The closed-loop benchmark's recorder: counts commands and acks, injects duplicates.

Runs in a child process of ``bench/closed_loop.py`` (``recorder_main``): it subscribes to
every command and ack of the bench site, republishes every ``dup_every``-th command it sees
``copies`` times (the ledger must answer them ``duplicate``), and counts the acks by
result and the acks ``applied``/``clamped`` for a command id already written (must be 0).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

from bench.closed_loop_analysis import APPLIED_RESULTS
from gridflex.contract import ack_topic
from gridflex.mqtt_asyncio import AsyncMqttClient

__all__ = ["ACK_FILTER", "COMMAND_FILTER", "SITE", "Recorded", "recorder_main"]

SITE = "bench"
COMMAND_FILTER = f"gridflex/v1/{SITE}/dispatch/+/command"
ACK_FILTER = f"gridflex/v1/{SITE}/dispatch/+/ack"
PROBE = b"bench-probe"


@dataclass(frozen=True)
class Recorded:
    """What the recorder saw: commands (first sight), copies it injected, acks by result.

    ``extra`` counts acks ``applied``/``clamped`` of a command id already acked so before.
    """

    commands: int
    injected: int
    acks: dict[str, int]
    extra: int


async def _record(
    url: str, dup: tuple[int, int], ready: Event, stop: Event, out: Connection
) -> None:
    dup_every, copies = dup
    seen: set[str] = set()
    acks: dict[str, int] = {}
    written: set[str] = set()
    extra = 0
    injected = 0
    probed = asyncio.Event()
    client = AsyncMqttClient(url, f"bench-closed-loop-{os.getpid()}", clean_session=True)

    def on_command(topic: str, payload: bytes) -> None:
        nonlocal injected
        try:
            command_id = json.loads(payload)["command_id"]
        except (ValueError, KeyError, TypeError):
            return
        if command_id in seen:  # a copy (ours, or a redelivery)
            return
        seen.add(command_id)
        if dup_every and len(seen) % dup_every == 0:
            for _ in range(copies):
                client.publish(topic, payload)
            injected += copies

    def on_ack(_topic: str, payload: bytes) -> None:
        nonlocal extra
        if payload == PROBE:
            probed.set()
            return
        ack = json.loads(payload)
        result = ack.get("result", "?")
        acks[result] = acks.get(result, 0) + 1
        if result in APPLIED_RESULTS:
            if ack["command_id"] in written:
                extra += 1
            written.add(ack["command_id"])

    client.subscribe(COMMAND_FILTER, on_command)
    client.subscribe(ACK_FILTER, on_ack)
    await client.start()
    if not await client.wait_connected(10):
        raise RuntimeError(f"recorder: no broker at {url}")
    client.publish(ack_topic(SITE, "probe"), PROBE)  # a round trip: subscribed
    await asyncio.wait_for(probed.wait(), 10)
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    await client.stop()
    out.send(Recorded(len(seen), injected, acks, extra))


def recorder_main(
    url: str, dup: tuple[int, int], ready: Event, stop: Event, out: Connection
) -> None:
    """Entry of the recorder: republish every ``dup[0]``-th command ``dup[1]`` times; count acks."""
    asyncio.run(_record(url, dup, ready, stop, out))
