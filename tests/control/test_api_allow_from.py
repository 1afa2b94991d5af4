"""``[api] allow_from`` on a real uvicorn: clients from 127.0.0.2 vs 127.0.0.1 on loopback."""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from control.api import ApiServer, create_app, serve_api
from control.profiles import ProfileStore
from gridflex.config import ApiConfig, ConfigError
from gridflex.net import free_port
from tests.control.api_helpers import TOKEN, FakeControl, self_signed_cert

pytestmark = pytest.mark.integration

ONLY_LOCALHOST = (ipaddress.ip_network("127.0.0.1/32"),)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProfileStore]:
    with ProfileStore(tmp_path / "profiles.sqlite3") as s:
        yield s


def _get(server: ApiServer, path: str, source: str, token: str | None = TOKEN) -> int:
    conn = http.client.HTTPConnection(
        server.host, server.port, timeout=10, source_address=(source, 0)
    )
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


async def _ws_status(server: ApiServer, source: str) -> int:
    uri = f"ws://{server.host}:{server.port}/api/v1/stream?token={TOKEN}"
    try:
        async with connect(uri, local_addr=(source, 0)):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def _run(store: ProfileStore, config: ApiConfig, sources: list[str]) -> dict[str, list[int]]:
    async def scenario() -> dict[str, list[int]]:
        server = serve_api(create_app(FakeControl(), store, TOKEN), config)
        try:
            assert await server.wait_started(), "the API server did not start"
            out: dict[str, list[int]] = {}
            for source in sources:
                out[source] = [
                    await asyncio.to_thread(_get, server, "/api/v1/assets", source),
                    await asyncio.to_thread(_get, server, "/api/v1/assets", source, None),
                    await asyncio.to_thread(_get, server, "/api/v1/health", source, None),
                    await _ws_status(server, source),
                ]
            return out
        finally:
            await asyncio.wait_for(server.stop(), 30)

    return asyncio.run(scenario())


def test_a_client_outside_allow_from_gets_403_before_the_token_is_checked(
    store: ProfileStore,
) -> None:
    config = ApiConfig(listen=f"127.0.0.1:{free_port()}", allow_from=ONLY_LOCALHOST)
    got = _run(store, config, ["127.0.0.1", "127.0.0.2"])
    # inside: token -> 200, no token -> 401, health -> 200 or 503, stream -> upgraded
    assert got["127.0.0.1"][:2] == [200, 401]
    assert got["127.0.0.1"][2] in (200, 503)
    assert got["127.0.0.1"][3] == 101
    # outside: 403 whatever the token, health included, and the WebSocket handshake too
    assert got["127.0.0.2"] == [403, 403, 403, 403]


def test_without_allow_from_every_client_reaching_the_listener_is_served(
    store: ProfileStore,
) -> None:
    config = ApiConfig(listen=f"127.0.0.1:{free_port()}")
    got = _run(store, config, ["127.0.0.2"])
    assert got["127.0.0.2"][:2] == [200, 401]
    assert got["127.0.0.2"][3] == 101


def test_api_tls_key_readable_by_others_is_refused(tmp_path: Path, store: ProfileStore) -> None:
    cert, key = self_signed_cert(tmp_path)
    key.chmod(0o644)
    config = ApiConfig(listen=f"127.0.0.1:{free_port()}", tls_cert=cert, tls_key=key)

    async def scenario() -> None:
        with pytest.raises(ConfigError, match=r"api\.tls_key: .*chmod 600"):
            serve_api(create_app(FakeControl(), store, TOKEN), config)

    asyncio.run(scenario())
