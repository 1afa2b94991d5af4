"""How the collector marks a failing device: ``offline`` for silence, ``error`` for garbage.

Control latches a lost-device fault on ``offline`` statuses in a row (``control.faults``),
so the two must not be confused, and ``consecutive_failures`` counts the failures of the
kind the state names: one timeout after a run of garbage is one silent failure, not the
n-th. No sockets: the poller runs on a scripted connection and a recording publisher.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from collectors.modbus.fast import DeviceError, GarbledReply, NotModbusTcp
from collectors.modbus.poller import CollectorStats, DevicePoller
from gridflex.config import parse_site
from gridflex.contract import AssetStatus
from gridflex.sunspec.discovery import ReadRegisters


class _Recorder:
    def __init__(self) -> None:
        self.statuses: list[AssetStatus] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        if topic.endswith("/status"):
            self.statuses.append(AssetStatus.model_validate_json(payload))
        return True


def _run(failures: Sequence[BaseException]) -> tuple[list[AssetStatus], CollectorStats]:
    """Run one poller whose connection fails with ``failures``, one per attempt."""
    site = parse_site(
        {
            "site": {"id": "s1"},
            "mqtt": {"url": "mqtt://127.0.0.1:1"},
            "modbus": {"backoff_initial_s": 0.001, "backoff_max_s": 0.002},
            "assets": [
                {"id": "inv1", "kind": "inverter", "host": "127.0.0.1", "max_charge_w": 5e3}
            ],
        }
    )
    mqtt, stats = _Recorder(), CollectorStats()
    script = list(failures)

    class Scripted:
        def __init__(self, *_args: Any, **_kwargs: Any) -> None:
            pass

        async def connect(self) -> None:
            if len(script) == 1:
                poller.stopping = True
            raise script.pop(0)

        def reader(self, unit_id: int) -> ReadRegisters:
            raise AssertionError("never connected")

        def close(self) -> None:
            pass

    poller = DevicePoller(site, site.inverters[0], mqtt, stats, boot="b", connection=Scripted)
    asyncio.run(poller.run())
    return mqtt.statuses, stats


def test_garbage_then_silence_counts_each_kind_afresh() -> None:
    statuses, stats = _run(
        [
            NotModbusTcp("protocol 7", []),
            GarbledReply("another transaction's frame"),
            DeviceError("Modbus exception 4", 4),
            TimeoutError("no reply"),
            ConnectionRefusedError("refused"),
            GarbledReply("truncated"),
        ]
    )
    assert [(s.state, s.consecutive_failures) for s in statuses] == [
        ("error", 1),
        ("error", 2),
        ("error", 3),
        ("offline", 1),  # not the 4th failure: the first silent one
        ("offline", 2),
        ("error", 1),
    ]
    assert [s.retry_in_ms for s in statuses] == [1, 2, 2, 2, 2, 2]  # the backoff counts all
    assert dict(stats.failure_kinds) == {"garbage": 4, "silent": 2}
    assert stats.failures == 6


def test_a_bug_is_an_internal_error_not_a_silent_device() -> None:
    statuses, stats = _run([KeyError("oops")])
    assert [(s.state, s.consecutive_failures) for s in statuses] == [("error", 1)]
    assert statuses[0].reason is not None and statuses[0].reason.startswith("internal error")
    assert dict(stats.failure_kinds) == {"internal": 1}
