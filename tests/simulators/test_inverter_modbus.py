"""The simulated inverters over real Modbus TCP sockets, read with pymodbus' client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from pymodbus.client import AsyncModbusTcpClient

from gridflex.net import free_port_block
from gridflex.sunspec.tables import load_model
from simulators.grid_frequency import FrequencyProfile
from simulators.inverter import InverterFleet, InverterRatings

pytestmark = pytest.mark.integration

RATINGS = InverterRatings(ramp_w_per_s=20_000)


async def _until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.05)


async def _read(client: AsyncModbusTcpClient, address: int, count: int) -> list[int]:
    reply = await client.read_holding_registers(address, count=count, device_id=1)
    assert not reply.isError(), reply
    return list(reply.registers)


def _int32(regs: list[int]) -> int:
    raw = (regs[0] << 16) | regs[1]
    return raw - (1 << 32) if raw >> 31 else raw


def _fleet(count: int = 2) -> InverterFleet:
    profile = FrequencyProfile((0.0,), (49.95,))
    return InverterFleet(count, free_port_block(count), frequency=profile, ratings=RATINGS, seed=1)


def test_map_scanned_over_tcp_has_marker_models_in_order_and_end_marker() -> None:
    async def scenario() -> None:
        async with _fleet(2) as fleet:
            client = AsyncModbusTcpClient("127.0.0.1", port=fleet.port(1), timeout=2)
            await client.connect()
            assert await _read(client, 40000, 2) == [0x5375, 0x6E53]
            address, found = 40002, []
            while True:
                model_id, length = await _read(client, address, 2)
                if model_id == 0xFFFF:
                    assert length == 0
                    break
                found.append((model_id, length))
                address += 2 + length
            client.close()
        assert found == [(m, load_model(m).length) for m in (1, 701, 702, 704, 711, 713)]

    asyncio.run(scenario())


def test_setpoint_write_reads_back_and_power_ramps_toward_it() -> None:
    async def scenario() -> None:
        async with _fleet(1) as fleet:
            device = fleet.devices[0]
            wset = device.address_of(704, "WSet")
            w = device.address_of(701, "W")
            client = AsyncModbusTcpClient("127.0.0.1", port=fleet.port(0), timeout=2)
            await client.connect()
            # SunSpec WSet +6000 W = inject 6 kW (gridflex: discharge, power_w -6000).
            reply = await client.write_registers(wset, [0, 6000], device_id=1)
            assert not reply.isError()
            reply = await client.write_register(device.address_of(704, "WSetEna"), 1, device_id=1)
            assert not reply.isError()
            assert _int32(await _read(client, wset, 2)) == 6000
            seen: list[int] = []

            async def at_setpoint() -> bool:
                value = (await _read(client, w, 1))[0]
                seen.append(value - 0x10000 if value >= 0x8000 else value)
                return seen[-1] == 6000

            await _until(at_setpoint)
            client.close()
        assert seen == sorted(seen), "power moves monotonically toward the setpoint"
        assert device.model.power_w == pytest.approx(-6000)

    asyncio.run(scenario())


def test_setpoint_reverts_to_wsetrvrt_after_wsetrvrttms() -> None:
    async def scenario() -> None:
        async with _fleet(1) as fleet:
            device = fleet.devices[0]
            client = AsyncModbusTcpClient("127.0.0.1", port=fleet.port(0), timeout=2)
            await client.connect()
            rvrt = device.address_of(704, "WSetRvrt")
            await client.write_registers(rvrt, [0, 0], device_id=1)  # revert to 0 W
            await client.write_registers(device.address_of(704, "WSetRvrtTms"), [0, 1], device_id=1)
            wset = device.address_of(704, "WSet")
            await client.write_registers(wset, [0xFFFF, 0xF060], device_id=1)  # absorb 4 kW
            await client.write_register(device.address_of(704, "WSetEna"), 1, device_id=1)
            assert _int32(await _read(client, wset, 2)) == -4000

            async def reverted() -> bool:
                return _int32(await _read(client, wset, 2)) == 0

            await _until(reverted)
            rem = device.address_of(704, "WSetRvrtRem")
            assert await _read(client, rem, 2) == [0, 0]
            client.close()

    asyncio.run(scenario())


def test_write_to_read_only_register_gets_illegal_data_address() -> None:
    async def scenario() -> None:
        async with _fleet(1) as fleet:
            device = fleet.devices[0]
            client = AsyncModbusTcpClient("127.0.0.1", port=fleet.port(0), timeout=2, retries=0)
            await client.connect()
            reply = await client.write_register(device.address_of(701, "W"), 1, device_id=1)
            assert reply.isError()
            assert reply.exception_code == 2
            client.close()

    asyncio.run(scenario())


def test_stopped_device_refuses_connections_and_comes_back() -> None:
    async def scenario() -> None:
        async with _fleet(2) as fleet:
            await fleet.stop_device(0)
            client = AsyncModbusTcpClient(
                "127.0.0.1", port=fleet.port(0), timeout=1, retries=0, reconnect_delay=0
            )
            assert not await client.connect()
            other = AsyncModbusTcpClient("127.0.0.1", port=fleet.port(1), timeout=2)
            assert await other.connect()
            assert await _read(other, 40000, 2) == [0x5375, 0x6E53]
            await fleet.start_device(0)
            assert await client.connect()
            assert await _read(client, 40000, 2) == [0x5375, 0x6E53]
            client.close()
            other.close()

    asyncio.run(scenario())


def test_hz_register_replays_the_frequency_profile_from_the_start() -> None:
    profile = FrequencyProfile((0.0, 0.3, 0.3), (50.0, 50.0, 49.8))

    async def scenario() -> list[int]:
        fleet = InverterFleet(1, free_port_block(1), frequency=profile, update_hz=20)
        async with fleet:
            device = fleet.devices[0]
            client = AsyncModbusTcpClient("127.0.0.1", port=fleet.port(0), timeout=2)
            await client.connect()
            hz = device.address_of(701, "Hz")
            seen: list[int] = []

            async def stepped() -> bool:
                regs = await _read(client, hz, 2)
                seen.append((regs[0] << 16) | regs[1])
                return seen[-1] == 49_800

            await _until(stepped)
            client.close()
            return seen

    seen = asyncio.run(scenario())
    assert set(seen) <= {50_000, 49_800}
    assert seen[-1] == 49_800


def _int16(value: int) -> int:
    return value - 0x10000 if value >= 0x8000 else value


def test_enabled_711_droops_on_the_measured_frequency_and_disabled_does_not() -> None:
    # 49.80 Hz after 0.3 s; 10 kW rating: IEEE 1547 defaults give 656 W injected.
    profile = FrequencyProfile((0.0, 0.3, 0.3), (50.0, 50.0, 49.8))
    ratings = InverterRatings(max_charge_w=10_000, max_discharge_w=10_000, ramp_w_per_s=20_000)

    async def scenario() -> None:
        fleet = InverterFleet(2, free_port_block(2), frequency=profile, ratings=ratings, seed=3)
        async with fleet:
            droop, plain = fleet.devices
            clients = [
                AsyncModbusTcpClient("127.0.0.1", port=fleet.port(i), timeout=2) for i in (0, 1)
            ]
            for client in clients:
                await client.connect()
            hz, w = droop.address_of(701, "Hz"), droop.address_of(701, "W")
            # a short response time (RspTms 0.3 s, RspTms_SF -1) keeps the test quick
            rsp = droop.address_of(711, "Ctl[0].RspTms")
            reply = await clients[0].write_registers(rsp, [0, 3], device_id=1)
            assert not reply.isError()
            reply = await clients[0].write_register(droop.address_of(711, "Ena"), 1, device_id=1)
            assert not reply.isError()
            assert await _read(clients[0], droop.address_of(711, "Ena"), 1) == [1]

            async def injecting() -> bool:
                return _int16((await _read(clients[0], w, 1))[0]) == 656

            await _until(injecting)
            assert await _read(clients[0], hz, 2) == [0, 49_800]
            assert await _read(clients[1], hz, 2) == [0, 49_800]
            assert await _read(clients[1], droop.address_of(711, "Ena"), 1) == [0]
            assert await _read(clients[1], w, 1) == [0]  # 711 disabled: no response
            for client in clients:
                client.close()
        assert droop.model.power_w == pytest.approx(-656.0, abs=0.5)
        assert plain.model.power_w == 0.0

    asyncio.run(scenario())
