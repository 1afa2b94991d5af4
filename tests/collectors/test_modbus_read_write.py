"""Function 23 (Read/Write Multiple Registers) in the lean Modbus client: codec and protocol.

The frame codec is checked against the Modbus spec's layout (6.17) by unpacking what it
encodes, and against the simulated inverter's server, which must read the same request
out of it; replies of any shape give the asked registers or a ``DeviceError``. Over a real
socket, the client's ``read_write`` against the simulator equals a function-16 write then
a function-3 read, and a device without function 23 answers exception 1.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus.fast import (
    MAX_READ_WRITE_REGISTERS,
    DeviceError,
    LeanModbusClient,
    decode_read_write_response,
    encode_read_write_request,
)
from gridflex.net import free_port_block
from simulators.inverter import InverterFleet

_VALUES = st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=MAX_READ_WRITE_REGISTERS)


@given(
    tid=st.integers(0, 0xFFFF),
    unit=st.integers(0, 255),
    read_address=st.integers(0, 0xFFFF - 124),
    read_count=st.integers(1, 125),
    write_address=st.integers(0, 0xFFFF - MAX_READ_WRITE_REGISTERS),
    values=_VALUES,
)
@settings(max_examples=200)
def test_read_write_request_is_the_spec_frame_and_parses_back(
    *, tid: int, unit: int, read_address: int, read_count: int, write_address: int,
    values: list[int],
) -> None:  # fmt: skip
    frame = encode_read_write_request(
        tid,
        unit,
        read_address=read_address,
        read_count=read_count,
        write_address=write_address,
        values=values,
    )
    got_tid, protocol, length, got_unit = struct.unpack_from(">HHHB", frame)
    assert (got_tid, protocol, got_unit) == (tid, 0, unit)
    assert length == len(frame) - 6  # the MBAP length counts the unit id and the PDU
    fc, r_addr, r_count, w_addr, w_count, nbytes = struct.unpack_from(">BHHHHB", frame, 7)
    assert (fc, r_addr, r_count, w_addr) == (23, read_address, read_count, write_address)
    assert (w_count, nbytes) == (len(values), 2 * len(values))
    assert list(struct.unpack_from(f">{len(values)}H", frame, 17)) == values
    assert len(frame) == 17 + 2 * len(values)


@pytest.mark.parametrize(
    ("read_address", "read_count", "write_address", "values"),
    [
        (0, 0, 0, [1]),  # nothing to read
        (0, 126, 0, [1]),  # more than a read returns
        (0, 1, 0, []),  # nothing to write
        (0, 1, 0, [0] * (MAX_READ_WRITE_REGISTERS + 1)),  # more than 23 writes
        (0xFFFF, 2, 0, [1]),  # read past 65535
        (0, 1, 0xFFFF, [1, 2]),  # write past 65535
        (0, 1, 0, [0x10000]),  # not a 16-bit value
    ],
)
def test_read_write_request_outside_the_protocol_limits_is_refused(
    read_address: int, read_count: int, write_address: int, values: list[int]
) -> None:
    with pytest.raises(ValueError, match=r"registers|count|values"):
        encode_read_write_request(
            1,
            1,
            read_address=read_address,
            read_count=read_count,
            write_address=write_address,
            values=values,
        )


@given(pdu=st.binary(max_size=260), address=st.integers(0, 0xFFFF), count=st.integers(1, 125))
@example(pdu=b"\x97\x01", address=40_000, count=2)  # illegal function
@example(pdu=b"\x97\x02", address=40_000, count=2)  # a refused write, not a probe
@example(pdu=b"\x03\x04\x00\x01\x00\x02", address=40_000, count=2)  # a read's reply
@settings(max_examples=300)
def test_any_read_write_reply_gives_the_asked_registers_or_a_device_error(
    pdu: bytes, address: int, count: int
) -> None:
    try:
        data = decode_read_write_response(pdu, address, count)
    except DeviceError as exc:  # never IllegalAddress: that is discovery's signal
        if len(pdu) == 2 and pdu[0] == 0x97:
            assert exc.code == pdu[1]
        return
    assert len(data) == 2 * count
    assert pdu == bytes([23, 2 * count]) + data


def test_read_write_reply_of_another_function_or_length_is_a_device_error() -> None:
    with pytest.raises(DeviceError, match="function 3"):
        decode_read_write_response(b"\x03\x02\x00\x01", 40_000, 1)
    with pytest.raises(DeviceError, match="asked 2 registers"):
        decode_read_write_response(b"\x17\x02\x00\x01", 40_000, 2)


# ---------------------------------------------------------------- over a socket


@pytest.mark.integration
def test_read_write_equals_a_write_then_a_read_on_the_simulator() -> None:
    async def scenario() -> tuple[list[int], list[int], int | None, list[int]]:
        base = free_port_block(3)
        async with (
            InverterFleet(2, base, seed=3) as fleet,
            InverterFleet(1, base + 2, read_write=False) as without_23,
        ):
            clients = [LeanModbusClient("127.0.0.1", base + i, timeout_s=2) for i in range(3)]
            for c in clients:
                await c.connect()
            one, two, old = clients
            try:
                # 704 WSetEna, WSetMod, WSet: enabled, watts, 3000 W (SunSpec + injection)
                address = fleet.devices[0].address_of(704, "WSetEna")
                block = [1, 1, 0, 3000]
                combined = await one.read_write(address, 10, address, block)
                await two.write(address, block)
                separate = await two.read(address, 10)
                code = None
                try:
                    await old.read_write(address, 10, address, block)
                except DeviceError as exc:
                    code = exc.code
                untouched = await old.read(address, 4)
                assert without_23.devices[0].read_write is False
                return combined, separate, code, untouched
            finally:
                for c in clients:
                    c.close()

    combined, separate, code, untouched = asyncio.run(scenario())
    assert combined == separate  # the read comes after the write, as 16 then 3
    assert combined[:4] == [1, 1, 0, 3000]
    assert code == 1  # illegal function: the client may fall back to 16 then 3
    assert untouched[2:4] != [0, 3000]  # and it wrote nothing


@pytest.mark.integration
def test_pymodbus_read_write_against_the_simulator_gives_what_the_lean_client_gives() -> None:
    """pymodbus' function 23 (the reference) on the simulated server, and the lean one."""

    async def scenario() -> tuple[list[int], list[int]]:
        base = free_port_block(2)
        async with InverterFleet(2, base, seed=4) as fleet:
            address = fleet.devices[0].address_of(704, "WSetEna")
            reference = AsyncModbusTcpClient("127.0.0.1", port=base, timeout=2)
            await reference.connect()
            lean = LeanModbusClient("127.0.0.1", base + 1, timeout_s=2)
            await lean.connect()
            try:
                reply = await reference.readwrite_registers(
                    read_address=address,
                    read_count=10,
                    write_address=address,
                    values=[1, 1, 0xFFFF, 0xF830],
                    device_id=1,
                )
                assert not reply.isError(), reply
                ours = await lean.read_write(address, 10, address, [1, 1, 0xFFFF, 0xF830])
                return list(reply.registers), ours
            finally:
                reference.close()
                lean.close()

    theirs, ours = asyncio.run(scenario())
    assert theirs == ours
    assert theirs[:4] == [1, 1, 0xFFFF, 0xF830]  # -2000 W: SunSpec + injection
