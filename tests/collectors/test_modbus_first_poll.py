"""The first poll after a discovery reads every block; a lost slot must not skip that.

Found by bench/fuzz.py (mangled replies): when the first poll after (re)discovery, the one
that also reads the slow blocks, lost its slot to a timeout or a busy reply, the next
poll read only the every-poll blocks and decoded the slow ones from data never read:
``struct.error`` escaped the poll chain and the device was marked ``error``.
Real Modbus TCP (the simulator) and a real Mosquitto, as in test_modbus_resilience.py.
"""

from __future__ import annotations

import struct
from collections import Counter

import pytest

from collectors.modbus.poller import CollectorStats
from simulators.inverter import InverterFleet
from tests.collectors.test_modbus_resilience import Watch, _run, _until

pytestmark = pytest.mark.integration

SUNS_HEADER = 40_000  # read by discovery only


def test_a_busy_slow_read_in_the_first_poll_after_discovery_is_not_an_error(
    mosquitto: object,
) -> None:
    async def body(fleet: InverterFleet, watch: Watch, stats: CollectorStats) -> None:
        device = fleet.devices[0]
        answer = device.handle_pdu
        reads: Counter[int] = Counter()
        state = {"armed": False, "slow": -1, "busy_sent": 0}

        def observe(unit_id: int, pdu: bytes) -> bytes:
            address = struct.unpack_from(">H", pdu, 1)[0] if pdu[:1] == b"\x03" else -1
            reads[address] += 1
            if address == SUNS_HEADER:
                state["armed"] = True  # a (re)discovery: its first poll reads every block
            elif state["armed"] and address == state["slow"]:
                state["armed"] = False
                state["busy_sent"] += 1
                return bytes((pdu[0] | 0x80, 6))  # exception 6: busy, a transient failure
            return answer(unit_id, pdu)

        device.handle_pdu = observe  # type: ignore[method-assign]
        # the slow block: read every LOW_PRIORITY_EVERY (5) polls, the others every poll
        await _until(lambda: max(reads.values(), default=0) >= 12, "no polls")
        fast = max(reads.values())
        slow = [a for a, n in reads.items() if 0 < n <= fast // 3]
        assert len(slow) == 1, f"no slow block in this plan: {reads}"
        state["slow"] = slow[0]

        await fleet.stop_device(0)  # the connection drops: offline, then rediscovered
        await fleet.start_device(0)
        await _until(lambda: state["busy_sent"] == 1, "the first poll's slow read never came")
        seen = len(watch.seqs)
        await _until(lambda: len(watch.seqs) >= seen + 5, "polling did not go on")
        states = [s for s, _ in watch.states]
        assert "error" not in states, watch.states
        assert states[:3] == ["online", "offline", "online"]

    _run(mosquitto, body)  # type: ignore[arg-type]
