"""The API's connections are TCP_NODELAY, as asyncio makes every TCP connection.

Found by bench/fuzz.py: ``serve_api`` binds its own socket, created without naming
IPPROTO_TCP, and asyncio only sets TCP_NODELAY on sockets that name it; each request on a
keep-alive connection then waited for the client's delayed ACK (Nagle), ~40 ms.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from control.api import ApiServer
from control.profiles import ProfileStore
from gridflex.config import ApiConfig
from gridflex.net import free_port
from tests.control.api_helpers import FakeControl
from tests.control.test_api_server import _with_server

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProfileStore]:
    with ProfileStore(tmp_path / "profiles.sqlite3") as s:
        yield s


def test_an_api_connection_is_tcp_nodelay(store: ProfileStore) -> None:
    async def scenario(server: ApiServer) -> list[int]:
        host, port = server.url.removeprefix("http://").split("/")[0].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /api/v1/health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")  # accepted and answered
        options = [
            proto.transport.get_extra_info("socket").getsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY
            )
            for proto in server.server_state.connections
        ]
        writer.close()
        return options

    config = ApiConfig(listen=f"127.0.0.1:{free_port()}")
    options = asyncio.run(_with_server(FakeControl(), store, config, scenario))
    assert options and all(options), options
