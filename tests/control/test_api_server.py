"""The API on a real uvicorn on loopback: TLS, the token, the WebSocket stream, the CLI.

The service behind it is the fake of ``api_helpers`` (the real one is the lead's); what is
real here is the server: sockets, TLS handshakes, HTTP and WebSocket framing, shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from control.api import ApiServer, create_app, serve_api
from control.cli import _start_api
from control.profiles import ProfileStore
from gridflex.cli import main as gridflex_main
from gridflex.config import API_TOKEN_ENV, ApiConfig
from gridflex.net import free_port
from tests.control.api_helpers import TOKEN, FakeControl, profile_body, self_signed_cert
from tests.loop_helpers import LoopThread

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TELEMETRY = ("gridflex/v1/depot-1/inverter/inv-001/telemetry", b'{"power_w":-2500.0}')


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProfileStore]:
    with ProfileStore(tmp_path / "profiles.sqlite3") as s:
        yield s


def _tls_config(certs: tuple[Path, Path], port: int = 0) -> ApiConfig:
    return ApiConfig(listen=f"127.0.0.1:{port or free_port()}", tls_cert=certs[0], tls_key=certs[1])


def _client_tls(certs: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs[0]))


async def _with_server(
    fake: FakeControl,
    store: ProfileStore,
    config: ApiConfig,
    scenario: Callable[[ApiServer], Awaitable[Any]],
) -> Any:
    server = serve_api(create_app(fake, store, TOKEN), config)
    try:
        assert await server.wait_started(), "the API server did not start"
        return await scenario(server)
    finally:
        await asyncio.wait_for(server.stop(), 30)


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def test_https_with_a_self_signed_cert_and_the_token(
    certs: tuple[Path, Path], store: ProfileStore
) -> None:
    fake = FakeControl()

    async def scenario(server: ApiServer) -> None:
        assert server.url.startswith("https://127.0.0.1:")
        async with httpx2.AsyncClient(base_url=server.url, verify=_client_tls(certs)) as http:
            health = await http.get("/api/v1/health")
            assert (health.status_code, health.json()["status"]) == (200, "ok")
            refused = await http.get("/api/v1/assets")
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert (await http.get("/api/v1/assets", headers=AUTH)).status_code == 200
            created = await http.post("/api/v1/charge-profile", json=profile_body(), headers=AUTH)
            assert created.status_code == 201
        async with httpx2.AsyncClient(base_url=server.url, verify=True) as untrusting:
            with pytest.raises(httpx2.ConnectError):  # the self-signed cert is not trusted
                await untrusting.get("/api/v1/health")
        plain = server.url.replace("https://", "http://")
        async with httpx2.AsyncClient(base_url=plain) as cleartext:
            with pytest.raises(httpx2.HTTPError):  # no plain HTTP on the TLS port
                await cleartext.get("/api/v1/health")

    asyncio.run(_with_server(fake, store, _tls_config(certs), scenario))
    assert fake.calls == [("profile_changed", "inv-001")]


def test_wss_stream_delivers_what_the_service_publishes(
    certs: tuple[Path, Path], store: ProfileStore
) -> None:
    fake = FakeControl()

    async def scenario(server: ApiServer) -> list[Any]:
        uri = server.url.replace("https://", "wss://") + "/api/v1/stream"
        async with connect(uri, ssl=_client_tls(certs), additional_headers=AUTH) as ws:
            await _until(lambda: fake.hub.subscribers == 1)
            fake.hub.publish(*TELEMETRY)
            fake.hub.publish("gridflex/v1/depot-1/dispatch/inv-001/ack", b'{"result":"applied"}')
            got = [json.loads(await ws.recv()) for _ in range(2)]
        await _until(lambda: fake.hub.subscribers == 0)  # the server saw the client leave
        return got

    got = asyncio.run(_with_server(fake, store, _tls_config(certs), scenario))
    assert got == [
        {"topic": TELEMETRY[0], "payload": {"power_w": -2500.0}},
        {"topic": "gridflex/v1/depot-1/dispatch/inv-001/ack", "payload": {"result": "applied"}},
    ]


def test_stream_handshake_without_the_token_is_http_401(store: ProfileStore) -> None:
    fake = FakeControl()

    async def scenario(server: ApiServer) -> int:
        uri = server.url.replace("http://", "ws://") + "/api/v1/stream?token=not-the-token-at-all"
        with pytest.raises(InvalidStatus) as info:
            async with connect(uri):
                pass
        return info.value.response.status_code

    config = ApiConfig(listen=f"127.0.0.1:{free_port()}")
    assert asyncio.run(_with_server(fake, store, config, scenario)) == 401
    assert fake.hub.subscribers == 0


def test_the_token_is_never_logged_by_the_server(
    store: ProfileStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # uvicorn logs the handshake's headers at DEBUG, whatever other tests left set before.
    caplog.set_level(logging.DEBUG, logger="uvicorn.error")
    fake = FakeControl(preload=[TELEMETRY])

    async def scenario(server: ApiServer) -> None:
        base = server.url.replace("http://", "ws://") + "/api/v1/stream"
        async with connect(f"{base}?token={TOKEN}") as ws:
            await ws.recv()
        async with connect(base, additional_headers=AUTH) as ws:
            await ws.recv()
        async with httpx2.AsyncClient(base_url=server.url) as http:
            await http.get("/api/v1/assets", headers=AUTH)

    config = ApiConfig(listen=f"127.0.0.1:{free_port()}")
    asyncio.run(_with_server(fake, store, config, scenario))
    server_log = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("websockets", "http"))
    )
    assert "/api/v1/stream?token=***" in server_log  # uvicorn logged the URL ...
    assert "Bearer ***" in server_log  # ... and the headers ...
    assert TOKEN not in server_log  # ... without the token


def test_stop_closes_a_stream_that_is_still_open(store: ProfileStore) -> None:
    fake = FakeControl()

    async def scenario() -> None:
        server = serve_api(
            create_app(fake, store, TOKEN), ApiConfig(listen=f"127.0.0.1:{free_port()}")
        )
        assert await server.wait_started()
        uri = server.url.replace("http://", "ws://") + "/api/v1/stream"
        async with connect(uri, additional_headers=AUTH) as ws:
            await _until(lambda: fake.hub.subscribers == 1)
            await asyncio.wait_for(server.stop(), 30)  # a hang would fail here, not a delay
            with pytest.raises(Exception, match=r"1012|close"):
                await ws.recv()
        assert fake.hub.subscribers == 0

    asyncio.run(scenario())


def test_serve_api_on_a_port_in_use_raises_oserror(store: ProfileStore) -> None:
    async def scenario() -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            with pytest.raises(OSError):
                serve_api(
                    create_app(FakeControl(), store, TOKEN), ApiConfig(listen=f"127.0.0.1:{port}")
                )

    asyncio.run(scenario())


def test_serve_api_with_a_missing_certificate_raises_oserror(
    tmp_path: Path, store: ProfileStore
) -> None:
    config = ApiConfig(
        listen=f"127.0.0.1:{free_port()}",
        tls_cert=tmp_path / "missing.pem",
        tls_key=tmp_path / "missing.key",
    )

    async def scenario() -> None:
        with pytest.raises(OSError):
            serve_api(create_app(FakeControl(), store, TOKEN), config)

    asyncio.run(scenario())


# ---------------------------------------------------------------------------- the CLI


def _site_file(folder: Path, api_lines: list[str]) -> Path:
    site = folder / "site.toml"
    site.write_text(
        "\n".join(
            [
                "[site]",
                'id = "depot-1"',
                "[history]",
                'dir = "data"',
                *api_lines,
                "[[assets]]",
                'id = "inv-001"',
                'kind = "inverter"',
                'host = "127.0.0.1"',
                "max_charge_w = 10000",
                "max_discharge_w = 10000",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return site


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread("api-test")
    yield thread
    thread.close()


def test_cli_clear_fault_calls_the_api_over_tls(
    tmp_path: Path,
    certs: tuple[Path, Path],
    store: ProfileStore,
    loop: LoopThread,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = FakeControl()
    config = _tls_config(certs)

    async def start() -> ApiServer:
        server = serve_api(create_app(fake, store, TOKEN), config)
        assert await server.wait_started()
        return server

    server = loop.run(start())
    try:
        site = _site_file(
            tmp_path,
            [
                "[api]",
                f'listen = "{config.listen}"',
                f'token = "{TOKEN}"',
                f'tls_cert = "{certs[0].name}"',  # relative to the site file
                f'tls_key = "{certs[1].name}"',
            ],
        )
        argv = ["control", "clear-fault", "inv-001", "--site", str(site)]
        assert gridflex_main(argv) == 0
        assert capsys.readouterr().out == "inv-001: cleared ground_fault\n"
        assert gridflex_main(argv) == 0
        assert capsys.readouterr().out == "inv-001: no latched fault\n"
        assert gridflex_main(["control", "clear-fault", "nope", "--site", str(site)]) == 1
        assert "HTTP 404: unknown asset 'nope'" in capsys.readouterr().err
    finally:
        loop.run(server.stop())
    assert fake.calls == [("clear_fault", "inv-001"), ("clear_fault", "inv-001")]


def test_cli_clear_fault_takes_the_token_from_the_environment(
    tmp_path: Path,
    store: ProfileStore,
    loop: LoopThread,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeControl()
    config = ApiConfig(listen=f"127.0.0.1:{free_port()}")

    async def start() -> ApiServer:
        server = serve_api(create_app(fake, store, TOKEN), config)
        assert await server.wait_started()
        return server

    server = loop.run(start())
    try:
        site = _site_file(tmp_path, ["[api]", f'listen = "{config.listen}"'])
        monkeypatch.setenv(API_TOKEN_ENV, TOKEN)
        assert gridflex_main(["control", "clear-fault", "inv-001", "--site", str(site)]) == 0
        assert "cleared ground_fault" in capsys.readouterr().out
        monkeypatch.setenv(API_TOKEN_ENV, "another-token-0123456789")
        assert gridflex_main(["control", "clear-fault", "inv-001", "--site", str(site)]) == 1
        assert "HTTP 401" in capsys.readouterr().err
    finally:
        loop.run(server.stop())


def test_cli_clear_fault_when_the_api_is_unreachable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _site_file(
        tmp_path, ["[api]", f'listen = "127.0.0.1:{free_port()}"', f'token = "{TOKEN}"']
    )
    assert gridflex_main(["control", "clear-fault", "inv-001", "--site", str(site)]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the API at http://127.0.0.1:" in err
    assert TOKEN not in err


def test_cli_clear_fault_without_an_api_table_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _site_file(tmp_path, [])
    assert gridflex_main(["control", "clear-fault", "inv-001", "--site", str(site)]) == 2
    err = capsys.readouterr().err
    assert str(site) in err
    assert "api: expected an [api] table" in err


def test_control_refuses_to_serve_the_api_without_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(API_TOKEN_ENV, raising=False)
    site = _site_file(tmp_path, ["[api]", 'listen = "127.0.0.1:18080"'])
    assert gridflex_main(["control", "--site", str(site)]) == 2
    err = capsys.readouterr().err
    assert f"config error in {site}: api.token: required to serve the API" in err
    assert API_TOKEN_ENV in err


def test_control_refuses_a_bad_api_listen_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _site_file(tmp_path, [])
    assert gridflex_main(["control", "--site", str(site), "--api-listen", "nowhere"]) == 2
    assert "--api-listen: expected HOST:PORT" in capsys.readouterr().err


def test_start_api_serves_the_service_and_never_logs_the_token(
    store: ProfileStore, caplog: pytest.LogCaptureFixture
) -> None:
    config = ApiConfig(listen=f"127.0.0.1:{free_port()}")

    async def scenario() -> int:
        server = await _start_api(FakeControl(), store, config, TOKEN, None)
        try:
            async with httpx2.AsyncClient(base_url=server.url) as http:
                return (await http.get("/api/v1/assets", headers=AUTH)).status_code
        finally:
            await server.stop()

    caplog.set_level(logging.INFO)
    assert asyncio.run(scenario()) == 200
    assert TOKEN not in caplog.text
