"""The library baselines: the production commands with pymodbus' or paho's client plugged in.

The commands have one client per hop (the lean Modbus client, the native asyncio MQTT
client); the libraries they replaced stay as the benchmarks' baselines and the tests'
oracles. This entry point builds the same collector / CSMS / writer objects as the
commands, through their typed seams, with the library clients injected:

- ``collectors.modbus.cli.main(args, connection=..., mqtt_factory=...)``
  (``collectors.modbus.connection.ConnectionFactory``, ``gridflex.mqtt_factory``);
- ``collectors.ocpp.cli.main(args, mqtt_factory=...)``;
- ``control.cli.main(args, open_modbus=...)`` (``control.modbus_client.OpenRegisterClient``).

Usage (from the repository root; every option of the command is accepted)::

    python -m bench.baselines collect-modbus --site F --modbus pymodbus --mqtt paho
    python -m bench.baselines collect-ocpp --site F --mqtt paho
    python -m bench.baselines control --site F --modbus pymodbus --no-api

``bench/poll.py``, ``bench/ocpp.py`` and ``bench/closed_loop.py`` run it beside the
command and print the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
from collections.abc import Callable, Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse

from collectors.modbus.connection import (
    ConnectionFactory,
    RegisterClient,
    register_reader,
)
from collectors.modbus.fast import DeviceError, LeanModbusClient, Ticker
from gridflex.config import ConfigError
from gridflex.log import setup_logging
from gridflex.mqtt import MqttClient, MqttStats
from gridflex.mqtt_asyncio import AsyncMqttClient
from gridflex.mqtt_factory import MqttClientFactory
from gridflex.sunspec.discovery import ReadRegisters

__all__ = [
    "MODBUS_CLIENTS",
    "MQTT_CLIENTS",
    "PahoAsyncClient",
    "PymodbusConnection",
    "main",
    "open_pymodbus_client",
]


class _HoldingRegistersResponse(ReadHoldingRegistersResponse):
    """pymodbus' function-3 response with a one-call decode.

    Registered on each client through pymodbus' public ``client.register()`` hook: the
    stock class unpacks register by register and formats itself for a debug log line on
    every reply, which was ~60 % of the client's decode time per poll. The baseline is
    pymodbus at its best, not at its slowest.
    """

    def decode(self, data: bytes) -> None:
        """Decode ``byte count, registers...`` in one ``struct`` call."""
        count = data[0]
        if count >= len(data) or count % 2:
            raise ModbusIOException(f"byte_count {count} does not fit a {len(data)}-byte reply")
        self.registers = list(struct.unpack_from(f">{count // 2}H", data, 1))

    def __str__(self) -> str:
        return f"ReadHoldingRegistersResponse({len(self.registers)} registers)"


class PymodbusConnection:
    """The collector's ``ModbusConnection`` over pymodbus' ``AsyncModbusTcpClient``.

    ``retries=0`` and ``reconnect_delay=0``: the collector's own retry loop re-discovers a
    returning device and shows its backoff in the asset status. Fits
    ``ConnectionFactory`` (the class itself); ``ticker`` is the lean client's and ignored.
    pymodbus' exceptions become the ones the collector knows (those of the lean client).
    """

    def __init__(
        self, host: str, port: int, *, timeout_s: float, ticker: Ticker | None = None
    ) -> None:
        self.host, self.port = host, port
        self.client = AsyncModbusTcpClient(
            host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0
        )
        self.client.register(_HoldingRegistersResponse)

    async def connect(self) -> None:
        """Open the connection; ``ConnectionError`` when the device does not accept it."""
        if not await self.client.connect():
            raise ConnectionError(f"cannot connect to {self.host}:{self.port}")

    def reader(self, unit_id: int) -> ReadRegisters:
        """See ``register_reader``; a lost connection raises ``ConnectionError``, no usable
        reply in time ``TimeoutError``, any other pymodbus error ``DeviceError``."""
        read = register_reader(self.client, unit_id)

        async def translated(address: int, count: int) -> Sequence[int]:
            try:
                return await read(address, count)
            except ConnectionException as exc:
                raise ConnectionError(str(exc)) from exc
            except ModbusIOException as exc:
                raise TimeoutError(str(exc)) from exc
            except ModbusException as exc:
                raise DeviceError(str(exc)) from exc

        return translated

    def close(self) -> None:
        """Close the connection."""
        self.client.close()


async def open_pymodbus_client(host: str, port: int, *, timeout_s: float) -> RegisterClient:
    """A connected ``AsyncModbusTcpClient`` (``control.modbus_client.OpenRegisterClient``)."""
    client = AsyncModbusTcpClient(host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0)
    if not await client.connect():
        client.close()
        raise ConnectionError(f"cannot connect to {host}:{port}")
    return client


class PahoAsyncClient:
    """paho's threaded ``gridflex.mqtt.MqttClient`` behind the commands' asyncio lifecycle.

    paho keeps its own network thread; ``start`` returns at once (as the command's
    client), ``wait_connected`` and ``stop`` block in a worker thread. Fits
    ``MqttClientFactory`` (the class itself).
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        will: tuple[str, bytes] | None = None,
        queue_limit: int = 100_000,
        keepalive_s: int = 30,
        max_inflight: int = 100,
    ) -> None:
        self.client = MqttClient(
            url,
            client_id,
            username=username,
            password=password,
            will=will,
            queue_limit=queue_limit,
            keepalive_s=keepalive_s,
            max_inflight=max_inflight,
        )

    @property
    def stats(self) -> MqttStats:
        """paho's counters (what the collectors' drop watch reads)."""
        return self.client.stats

    @property
    def connected(self) -> bool:
        """Whether paho is connected right now."""
        return self.client.connected

    async def start(self) -> None:
        """Start paho's network thread (connects in the background)."""
        self.client.start()

    async def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """True once connected, False after ``timeout_s``."""
        return await asyncio.to_thread(self.client.wait_connected, timeout_s)

    async def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Drain (bounded) and disconnect."""
        await asyncio.to_thread(self.client.stop, flush_timeout_s)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        """See ``MqttClient.publish``."""
        return self.client.publish(topic, payload, qos, retain)

    def subscribe(
        self, topic_filter: str, callback: Callable[[str, bytes], None], qos: int = 1
    ) -> None:
        """See ``MqttClient.subscribe`` (the callback runs on paho's thread)."""
        self.client.subscribe(topic_filter, callback, qos)


MODBUS_CLIENTS: dict[str, ConnectionFactory] = {
    "lean": LeanModbusClient,
    "pymodbus": PymodbusConnection,
}
MQTT_CLIENTS: dict[str, MqttClientFactory] = {
    "asyncio": AsyncMqttClient,
    "paho": PahoAsyncClient,
}


def _parser() -> argparse.ArgumentParser:
    from collectors.modbus.cli import add_arguments as modbus_arguments
    from collectors.ocpp.cli import add_arguments as ocpp_arguments
    from control.cli import add_arguments as control_arguments

    parser = argparse.ArgumentParser(
        prog="python -m bench.baselines", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")
    commands = parser.add_subparsers(dest="command", required=True)
    modbus = commands.add_parser("collect-modbus", help="gridflex collect modbus")
    modbus_arguments(modbus)
    modbus.add_argument("--modbus", choices=tuple(MODBUS_CLIENTS), default="pymodbus")
    modbus.add_argument("--mqtt", choices=tuple(MQTT_CLIENTS), default="paho")
    ocpp = commands.add_parser("collect-ocpp", help="gridflex collect ocpp")
    ocpp_arguments(ocpp)
    ocpp.add_argument("--mqtt", choices=tuple(MQTT_CLIENTS), default="paho")
    control = commands.add_parser("control", help="gridflex control")
    control_arguments(control)
    control.add_argument("--modbus", choices=("lean", "pymodbus"), default="pymodbus")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command with the baseline clients; its exit code."""
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.command == "collect-modbus":
            from collectors.modbus.cli import main as collect_modbus

            return collect_modbus(
                args, connection=MODBUS_CLIENTS[args.modbus], mqtt_factory=MQTT_CLIENTS[args.mqtt]
            )
        if args.command == "collect-ocpp":
            from collectors.ocpp.cli import main as collect_ocpp

            return collect_ocpp(args, mqtt_factory=MQTT_CLIENTS[args.mqtt])
        from control.cli import main as control
        from control.modbus_client import open_client

        opener = open_pymodbus_client if args.modbus == "pymodbus" else open_client
        return control(args, open_modbus=opener)
    except ConfigError as exc:
        sys.stderr.write(f"baselines: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
