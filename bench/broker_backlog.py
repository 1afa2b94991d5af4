"""Benchmark: the broker holds the documented envelope's backlog; a bounded receiver drains it.

Starts Mosquitto with the limits gridflex writes (``gridflex.broker_config.BrokerLimits``),
opens a persistent session (as the pipeline's), publishes ``--messages`` QoS 1 messages of
``--size`` bytes to it while it is away (default: the envelope, 1,000 assets x 5
messages/s x 60 s = 300,000), then connects the pipeline's receiver
(``pipelines.mqtt_receiver.MqttReceiver``, ``--receive-queue`` bound, PUBACK on receipt
or ``--durable-ack``) with a consumer that takes a batch every ``--take-ms``, and reports:
messages published and their rate, the broker's RSS with the backlog queued, messages
received (must equal published: nothing dropped), the drain rate, the receiver's largest
queue (must not exceed the bound) and how often it paused reading.

    .venv/bin/python bench/broker_backlog.py
    .venv/bin/python bench/broker_backlog.py --messages 50000 --take-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
import uuid
from pathlib import Path

from gridflex.broker import Broker, start_broker
from gridflex.broker_config import ENVELOPE_OUTAGE_S, ENVELOPE_RATE_PER_S
from gridflex.mqtt import open_session
from gridflex.mqtt_asyncio import AsyncMqttClient
from pipelines.mqtt_receiver import MqttReceiver, ReceiverSettings


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _publish(url: str, topic: str, count: int, size: int) -> float:
    client = AsyncMqttClient(url, f"backlog-pub-{uuid.uuid4().hex[:8]}", queue_limit=count + 1)
    await client.start()
    assert await client.wait_connected(10)
    pad = b"x" * max(0, size - 12)
    start = time.perf_counter()
    for i in range(count):
        client.publish(topic, b"%011d:" % i + pad)
        if i % 1000 == 999:
            await asyncio.sleep(0)
            while client.pending() > 20_000:  # keep the client's own memory small
                await asyncio.sleep(0.005)
    if not await client.flush(600):
        raise RuntimeError(f"{client.pending()} messages never acknowledged")
    elapsed = time.perf_counter() - start
    await client.stop()
    return elapsed


def main() -> int:
    """Run once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=ENVELOPE_RATE_PER_S * ENVELOPE_OUTAGE_S)
    parser.add_argument("--size", type=int, default=400, help="payload bytes")
    parser.add_argument("--receive-queue", type=int, default=10_000)
    parser.add_argument("--take-ms", type=float, default=5.0, help="consumer's take interval")
    parser.add_argument("--durable-ack", action="store_true")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    broker: Broker = start_broker("mosquitto")
    assert broker.process is not None
    topic = "bench/backlog"
    client_id = f"backlog-recv-{uuid.uuid4().hex[:8]}"
    try:
        open_session(broker.url, client_id, topic)
        rss_before = _rss_mb(broker.process.pid)
        publish_s = asyncio.run(_publish(broker.url, topic, args.messages, args.size))
        rss_backlog = _rss_mb(broker.process.pid)
        with tempfile.TemporaryDirectory() as wal:
            receiver = MqttReceiver(
                ReceiverSettings(
                    host=broker.host,
                    port=broker.port,
                    tls=False,
                    client_id=client_id,
                    topic_filters=(topic,),
                    receive_queue=args.receive_queue,
                    wal_dir=wal if args.durable_ack else None,
                )
            )
            start = time.perf_counter()
            receiver.start()
            got = 0
            last = -1
            in_order = True
            deadline = start + args.timeout_s
            while got < args.messages and time.perf_counter() < deadline:
                time.sleep(args.take_ms / 1000)
                batch, _through = receiver.take()
                for _topic, payload, _ms in batch:
                    seq = int(payload[:11])
                    in_order = in_order and seq == last + 1
                    last = seq
                got += len(batch)
            drain_s = time.perf_counter() - start
            receiver.stop()
    finally:
        broker.stop()
    print(
        f"published        {args.messages:,} x {args.size} B in {publish_s:.1f} s "
        f"({args.messages / publish_s:,.0f}/s)"
    )
    print(f"broker RSS       {rss_before:.0f} MB idle, {rss_backlog:.0f} MB with the backlog")
    print(
        f"received         {got:,} ({'all' if got == args.messages else 'MISSING'}), "
        f"in order: {in_order}"
    )
    print(
        f"drain            {drain_s:.1f} s ({got / drain_s:,.0f}/s), "
        f"durable ack: {args.durable_ack}"
    )
    print(
        f"receiver queue   max {receiver.max_pending:,} of {args.receive_queue:,}, "
        f"reading paused {receiver.read_pauses:,} times"
    )
    return 0 if got == args.messages and in_order else 1


if __name__ == "__main__":
    sys.exit(main())
