"""Discovery walk over a fake register space, and read planning."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from gridflex.sunspec.discovery import (
    DiscoveryError,
    IllegalAddress,
    discover,
    plan_reads,
)


def _reader(space: dict[int, int]):
    async def read(address: int, count: int) -> Sequence[int]:
        if any(a not in space for a in range(address, address + count)):
            raise IllegalAddress(address)
        return [space[a] for a in range(address, address + count)]

    return read


def _device(base: int, models: list[tuple[int, int]]) -> dict[int, int]:
    regs = [0x5375, 0x6E53]
    for model_id, length in models:
        regs += [model_id, length] + [0] * length
    regs += [0xFFFF, 0]
    return {base + i: r for i, r in enumerate(regs)}


def test_discover_walks_the_chain_at_40000() -> None:
    found = asyncio.run(discover(_reader(_device(40000, [(1, 66), (701, 153), (713, 7)]))))
    assert found.base == 40000
    assert found.model_ids == [1, 701, 713]
    assert [m.address for m in found.models] == [40002, 40070, 40225]
    assert found.find(713) is not None
    assert found.find(704) is None


@pytest.mark.parametrize("base", [0, 50000])
def test_discover_falls_back_to_0_then_50000(base: int) -> None:
    found = asyncio.run(discover(_reader(_device(base, [(1, 66)]))))
    assert found.base == base


def test_no_marker_anywhere_is_a_discovery_error() -> None:
    space = {a: 0 for a in range(40000, 40010)}
    with pytest.raises(DiscoveryError, match="no SunSpec marker"):
        asyncio.run(discover(_reader(space)))


def test_chain_without_end_marker_is_a_discovery_error() -> None:
    space = _device(40000, [(1, 66)])
    del space[max(space)]
    del space[max(space)]
    with pytest.raises(DiscoveryError, match="runs past"):
        asyncio.run(discover(_reader(space)))


def test_plan_reads_merges_spans_within_125_registers() -> None:
    assert plan_reads([(100, 2), (103, 1), (110, 4)]) == [(100, 14)]
    assert plan_reads([(0, 10), (200, 5), (120, 5)]) == [(0, 125), (200, 5)]


def test_plan_reads_keeps_far_apart_spans_separate() -> None:
    assert plan_reads([(40073, 34), (40297, 54)]) == [(40073, 34), (40297, 54)]


def test_plan_reads_refuses_a_span_larger_than_one_read() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        plan_reads([(0, 126)])
