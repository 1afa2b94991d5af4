"""The devices the control service writes to, connected on first use.

:class:`LazySunSpecDevice` is a SunSpec inverter behind the writer's ``SetpointDevice``:
it connects and discovers the device (``discover_plan``) on the first command, and drops
the connection on any failure so that the next command starts afresh. A device that cannot
be reached costs its own asset a ``failed`` ack and nothing else. It is also the inverter's
``control.droop.DroopProgrammable`` for the local-droop supervisor, which shares its
connection (``connect`` opens one at a time).
"""

from __future__ import annotations

import asyncio
import logging

from collectors.modbus.connection import RegisterClient, discover_plan, register_reader
from control.droop import DroopReadback
from control.modbus_client import OpenRegisterClient, open_client
from control.sunspec import SunSpecDevice
from gridflex.config import InverterAsset
from gridflex.sunspec.discovery import ModelMap
from gridflex.sunspec.tables import load_model
from pipelines.dispatch import DroopParams

__all__ = ["LazySunSpecDevice", "describe_error"]

log = logging.getLogger(__name__)


def describe_error(exc: BaseException) -> str:
    """``Type: text`` of an exception, for acks and logs."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class LazySunSpecDevice:
    """A ``SetpointDevice`` that connects (and discovers) on first use.

    Any failure of the connection, a write or a read-back drops the connection, so the next
    command starts from a fresh connection and discovery.
    """

    def __init__(
        self,
        asset: InverterAsset,
        *,
        revert_s: int,
        timeout_s: float,
        open_modbus: OpenRegisterClient = open_client,
    ) -> None:
        self.asset = asset
        self.revert_s = revert_s
        self.timeout_s = timeout_s
        self.open_modbus = open_modbus
        self._client: RegisterClient | None = None
        self._device: SunSpecDevice | None = None
        self._connect_lock = asyncio.Lock()
        #: Whether the device serves function 23 (write and read back in one request);
        #: False once it answered illegal function, across reconnections.
        self.read_write = True

    @property
    def connected(self) -> bool:
        """Whether a discovered connection is open."""
        return self._device is not None

    async def connect(self) -> SunSpecDevice:
        """The connected device; connects and discovers it first if needed (raises).

        One connection at a time: the command worker and the local-droop supervisor share
        the device.
        """
        device, client = self._device, self._client
        if device is not None and client is not None and client.connected:
            return device  # connected: no lock to take (nothing awaited since the check)
        async with self._connect_lock:
            return await self._connect()

    async def _connect(self) -> SunSpecDevice:
        if self._device is not None and self._client is not None and self._client.connected:
            return self._device
        self.drop()
        a = self.asset
        client = await self.open_modbus(a.host, a.port, timeout_s=self.timeout_s)
        try:
            plan = await discover_plan(register_reader(client, a.unit_id))
        except BaseException:
            client.close()
            raise
        self._client = client
        self._device = SunSpecDevice(
            client, plan.model_map, a.unit_id, self.revert_s, default_w=a.default_setpoint_w
        )
        self._device.read_write = self.read_write
        log.info("%s: connected to %s:%d", a.id, a.host, a.port)
        return self._device

    def drop(self) -> None:
        """Close the connection (if any); the next use reconnects."""
        if self._client is not None:
            self._client.close()
        self._client = None
        self._device = None

    async def write(self, setpoint_w: float) -> None:
        """See ``SunSpecDevice.write``."""
        try:
            await (await self.connect()).write(setpoint_w)
        except Exception:
            self.drop()
            raise

    async def read_back(self) -> float:
        """See ``SunSpecDevice.read_back``."""
        try:
            return await (await self.connect()).read_back()
        except Exception:
            self.drop()
            raise

    async def write_read_back(self, setpoint_w: float) -> float:
        """See ``SunSpecDevice.write_read_back`` (function 23, or 16 then 3)."""
        try:
            device = await self.connect()
            try:
                return await device.write_read_back(setpoint_w)
            finally:
                if self.read_write and not device.read_write:
                    log.info(
                        "%s: no function 23 (illegal function): setpoints are written with "
                        "function 16 and read back with 3",
                        self.asset.id,
                    )
                self.read_write = device.read_write
        except Exception:
            self.drop()
            raise

    async def program_droop(self, params: DroopParams) -> DroopReadback:
        """See ``SunSpecDevice.program_droop`` (``control.droop.DroopProgrammable``)."""
        try:
            return await (await self.connect()).program_droop(params)
        except Exception:
            self.drop()
            raise

    async def read_droop(self) -> DroopReadback:
        """See ``SunSpecDevice.read_droop``."""
        try:
            return await (await self.connect()).read_droop()
        except Exception:
            self.drop()
            raise

    async def read_soc_pct(self) -> float | None:
        """The battery's SoC from model 713, %; None when absent or unreadable."""
        device = self._device
        if device is None:
            return None
        try:
            return await _read_soc_pct(device.client, device.model_map, device.unit_id)
        except Exception as exc:
            log.warning("%s: SoC unknown: %s", self.asset.id, describe_error(exc))
            return None


async def _read_soc_pct(client: RegisterClient, model_map: ModelMap, unit_id: int) -> float | None:
    instance = model_map.find(713)
    if instance is None:
        return None
    table = load_model(713)
    registers = await register_reader(client, unit_id)(instance.address, table.size)
    value = table.decode_scaled(registers, "SoC")
    if not isinstance(value, int | float) or not 0.0 <= value <= 100.0:
        return None
    return float(value)
