"""Request bodies past the API's bound get 413 on a real uvicorn; bodies within it pass."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from control.api import ApiServer, create_app, serve_api
from control.api.limits import MAX_BODY_BYTES
from control.profiles import ProfileStore
from gridflex.config import ApiConfig
from gridflex.net import free_port
from tests.control.api_helpers import TOKEN, FakeControl, profile_body

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProfileStore]:
    with ProfileStore(tmp_path / "profiles.sqlite3") as s:
        yield s


def _oversized_profile() -> bytes:
    """A valid profile padded with whitespace past the bound (valid JSON, just too big)."""
    body = json.dumps(profile_body()).encode()
    return body + b" " * (MAX_BODY_BYTES + 1 - len(body))


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _run(
    fake: FakeControl,
    store: ProfileStore,
    scenario: Callable[[httpx2.AsyncClient], Awaitable[list[int]]],
) -> list[int]:
    async def main() -> list[int]:
        server: ApiServer = serve_api(
            create_app(fake, store, TOKEN), ApiConfig(listen=f"127.0.0.1:{free_port()}")
        )
        try:
            assert await server.wait_started()
            async with httpx2.AsyncClient(base_url=server.url, timeout=30) as http:
                return await scenario(http)
        finally:
            await asyncio.wait_for(server.stop(), 30)

    return asyncio.run(main())


def test_a_body_declared_larger_than_the_bound_is_refused_with_413(store: ProfileStore) -> None:
    fake = FakeControl()

    async def scenario(http: httpx2.AsyncClient) -> list[int]:
        big = await http.post("/api/v1/charge-profile", content=_oversized_profile(), headers=AUTH)
        return [big.status_code]

    assert _run(fake, store, scenario) == [413]
    assert fake.calls == []  # nothing reached the service


def test_a_chunked_body_is_refused_once_it_passes_the_bound(store: ProfileStore) -> None:
    fake = FakeControl()

    async def scenario(http: httpx2.AsyncClient) -> list[int]:
        big = await http.post(
            "/api/v1/charge-profile", content=_chunks(_oversized_profile()), headers=AUTH
        )
        assert "content-length" not in big.request.headers  # really chunked
        return [big.status_code]

    assert _run(fake, store, scenario) == [413]
    assert fake.calls == []


def test_bodies_within_the_bound_still_work_plain_and_chunked(store: ProfileStore) -> None:
    fake = FakeControl()
    body = json.dumps(profile_body()).encode()

    async def scenario(http: httpx2.AsyncClient) -> list[int]:
        plain = await http.post("/api/v1/charge-profile", content=body, headers=AUTH)
        again = json.dumps(profile_body(profile_id="p-2")).encode()
        chunked = await http.post(
            "/api/v1/charge-profile", content=_chunks(again, 16), headers=AUTH
        )
        return [plain.status_code, chunked.status_code]

    assert _run(fake, store, scenario) == [201, 201]
    assert fake.calls == [("profile_changed", "inv-001")] * 2
