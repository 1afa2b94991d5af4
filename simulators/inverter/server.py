"""The fleet: one lean asyncio Modbus TCP server per device and a 10 Hz update task."""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from dataclasses import dataclass, field

from simulators.grid_frequency import (
    FrequencySource,
    StochasticFrequency,
)
from simulators.inverter.model import InverterModel, InverterRatings
from simulators.inverter.registers import DROOP_CONTROLS, SimulatedInverter


class _ModbusTcpProtocol(asyncio.Protocol):
    """MBAP framing for one client connection of one device."""

    def __init__(self, device: SimulatedInverter, connections: set[asyncio.Transport]) -> None:
        self._device = device
        self._connections = connections
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._connections.discard(self._transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        transport = self._transport
        assert transport is not None
        while len(buf) >= 8:
            tid, protocol, length, unit = struct.unpack_from(">HHHB", buf)
            if protocol != 0 or not 2 <= length <= 254:
                transport.close()  # not Modbus TCP: drop the connection
                buf.clear()
                return
            end = 6 + length
            if len(buf) < end:
                return
            response = self._device.handle_pdu(unit, bytes(buf[7:end]))
            del buf[:end]
            if self._device.unanswered > 0:  # fault injection: a request lost on the way
                self._device.unanswered -= 1
                continue
            transport.write(struct.pack(">HHHB", tid, 0, len(response) + 1, unit) + response)


@dataclass
class _Endpoint:
    device: SimulatedInverter
    port: int
    server: asyncio.Server | None = None
    connections: set[asyncio.Transport] = field(default_factory=set)


class InverterFleet:
    """N simulated inverters, device ``i`` on ``host:base_port + i``, one update loop.

    Use as ``async with InverterFleet(...) as fleet:``; ``fleet.devices[i]`` is the
    ``SimulatedInverter`` (its ``model`` the physics) for tests. ``read_write=False``: the
    devices answer function 23 with exception 1 (illegal function), as some inverters do.
    """

    def __init__(
        self,
        count: int,
        base_port: int,
        *,
        host: str = "127.0.0.1",
        frequency: FrequencySource | None = None,
        ratings: InverterRatings | None = None,
        seed: int | None = None,
        update_hz: float = 10.0,
        droop_controls: int = DROOP_CONTROLS,
        read_write: bool = True,
    ) -> None:
        rng = random.Random(seed)
        self.host = host
        self.frequency = frequency or StochasticFrequency(seed=seed)
        self.update_interval_s = 1.0 / update_hz
        self._endpoints: list[_Endpoint] = []
        for i in range(count):
            model = InverterModel(
                ratings=ratings or InverterRatings(),
                soc_pct=rng.uniform(20.0, 80.0),
                energy_import_wh=rng.uniform(1e5, 1e7),
                energy_export_wh=rng.uniform(1e5, 1e7),
                ambient_c=rng.uniform(20.0, 30.0),
            )
            device = SimulatedInverter(
                model,
                serial=f"SIM{i:06d}",
                droop_controls=droop_controls,
                read_write=read_write,
            )
            self._endpoints.append(_Endpoint(device=device, port=base_port + i))
        self._updater: asyncio.Task[None] | None = None
        self._t0 = 0.0

    @property
    def devices(self) -> list[SimulatedInverter]:
        """The simulated devices, by index."""
        return [e.device for e in self._endpoints]

    def port(self, index: int) -> int:
        """TCP port of device ``index``."""
        return self._endpoints[index].port

    async def start(self) -> None:
        """Listen on every device's port and start the update loop."""
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        for i in range(len(self._endpoints)):
            await self.start_device(i)
        self._updater = asyncio.create_task(self._update_loop(), name="inverter-updates")

    async def start_device(self, index: int) -> None:
        """Put device ``index`` (back) on the network."""
        ep = self._endpoints[index]
        if ep.server is not None:
            return
        loop = asyncio.get_running_loop()
        ep.server = await loop.create_server(
            lambda: _ModbusTcpProtocol(ep.device, ep.connections),
            self.host,
            ep.port,
            reuse_address=True,
        )

    async def stop_device(self, index: int) -> None:
        """Take device ``index`` off the network: stop listening, drop its connections."""
        ep = self._endpoints[index]
        if ep.server is None:
            return
        ep.server.close()
        for transport in list(ep.connections):
            transport.abort()
        await ep.server.wait_closed()
        ep.server = None

    def set_ground_fault(self, index: int, faulted: bool) -> None:
        """Trip device ``index`` with a ground fault (or clear it); it shows at once."""
        device = self._endpoints[index].device
        device.model.ground_fault = faulted
        device.refresh(device.freq_hz)

    async def reboot_device(self, index: int) -> None:
        """Power-cycle device ``index``: off the network, controls to factory, back on."""
        await self.stop_device(index)
        self._endpoints[index].device.reboot()
        await self.start_device(index)

    async def stop(self) -> None:
        """Stop every device and the update loop."""
        if self._updater is not None:
            self._updater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._updater
            self._updater = None
        for i in range(len(self._endpoints)):
            await self.stop_device(i)

    async def __aenter__(self) -> InverterFleet:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def _update_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        tick = 0
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, self._t0 + tick * self.update_interval_s - loop.time()))
            now = loop.time()
            dt_s, last = now - last, now
            freq_hz = self.frequency.freq_hz(now - self._t0)
            for ep in self._endpoints:
                ep.device.step(dt_s, freq_hz)
