"""The simulated inverter's function 23 (Read/Write Multiple Registers) against 16 then 3.

Oracle: two identical devices; one gets a function-23 request, the other the same write as
function 16 and then the same read as function 3. The answers and the register images must
agree, whatever is written where (writable points, read-only ones, bad values).
"""

from __future__ import annotations

import struct

from hypothesis import example, given, settings
from hypothesis import strategies as st

from simulators.inverter.model import InverterModel
from simulators.inverter.registers import ILLEGAL_FUNCTION, SimulatedInverter


def _device(*, read_write: bool = True) -> SimulatedInverter:
    return SimulatedInverter(InverterModel(soc_pct=42.0), serial="RW1", read_write=read_write)


_PROBE = _device()
_BLOCK_704 = _PROBE.model_address(704)
_END = _PROBE.end_address
_WSETENA = _PROBE.address_of(704, "WSetEna")


def _read_write_pdu(
    read_address: int, read_count: int, write_address: int, values: list[int]
) -> bytes:
    count = len(values)
    head = struct.pack(">BHHHHB", 23, read_address, read_count, write_address, count, 2 * count)
    return head + struct.pack(f">{count}H", *values)


def _write_pdu(address: int, values: list[int]) -> bytes:
    count = len(values)
    return struct.pack(">BHHB", 16, address, count, 2 * count) + struct.pack(f">{count}H", *values)


@given(
    write_address=st.integers(_BLOCK_704 - 4, _BLOCK_704 + 60),
    values=st.lists(st.integers(0, 0xFFFF) | st.sampled_from([0, 1, 2]), min_size=1, max_size=12),
    read_address=st.integers(39_990, _END + 2),
    read_count=st.integers(1, 125),
)
@example(  # the control writer's setpoint: enabled, watts, WSet, WSetRvrt; read to WSetRvrtTms
    write_address=_WSETENA, values=[1, 1, 0, 3000, 0, 0], read_address=_WSETENA, read_count=10
)
@settings(max_examples=200, deadline=None)
def test_read_write_answers_and_changes_what_a_write_then_a_read_would(
    write_address: int, values: list[int], read_address: int, read_count: int
) -> None:
    combined, separate = _device(), _device()
    answer = combined.handle_pdu(
        1, _read_write_pdu(read_address, read_count, write_address, values)
    )
    probe = _device().handle_pdu(1, struct.pack(">BHH", 3, read_address, read_count))
    if probe[0] & 0x80:  # a bad read range is refused before anything is written
        assert answer == bytes((0x97, probe[1]))
        assert combined.image == _device().image
        return
    written = separate.handle_pdu(1, _write_pdu(write_address, values))
    if written[0] & 0x80:  # the write refused: the same exception, nothing written
        assert answer == bytes((0x97, written[1]))
        assert combined.image == separate.image == _device().image
        return
    read = separate.handle_pdu(1, struct.pack(">BHH", 3, read_address, read_count))
    assert answer == bytes((23,)) + read[1:]
    assert combined.image == separate.image


def test_a_device_without_function_23_answers_illegal_function_and_writes_nothing() -> None:
    device = _device(read_write=False)
    before = bytes(device.image)
    answer = device.handle_pdu(1, _read_write_pdu(_WSETENA, 10, _WSETENA, [1, 1, 0, 3000]))
    assert answer == bytes((0x97, ILLEGAL_FUNCTION))
    assert device.image == before


def test_a_malformed_read_write_request_is_illegal_data_value() -> None:
    device = _device()
    pdu = _read_write_pdu(_WSETENA, 10, _WSETENA, [1, 1])
    assert device.handle_pdu(1, pdu[:-1]) == bytes((0x97, 3))  # byte count and data differ
    assert device.handle_pdu(1, _read_write_pdu(_WSETENA, 126, _WSETENA, [1])) == bytes((0x97, 3))
