"""A station with no OCPP version the CSMS speaks: HTTP 400, counted, one warning, no traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gridflex.net import free_port
from tests.collectors.test_ocpp_csms import PASSWORD, Site, basic, spec
from tests.loop_helpers import LoopThread

pytestmark = pytest.mark.integration


@pytest.fixture
def site() -> Iterator[Site]:
    lt = LoopThread()
    running = Site(lt, f"mqtt://127.0.0.1:{free_port()}", [spec("cs1", "2.1"), spec("cs2", "2.1")])
    lt.run(running.csms.start())
    yield running
    running.close()
    lt.close()


def _attempt(site: Site, station: str, subprotocols: list[str] | None) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        url = f"ws://127.0.0.1:{site.csms.port}/ocpp/{station}"
        try:
            async with connect(
                url,
                subprotocols=subprotocols,  # type: ignore[arg-type]
                additional_headers=basic(station, PASSWORD),
            ):
                return 101, b""
        except InvalidStatus as exc:
            return exc.response.status_code, exc.response.body or b""

    return site.lt.run(go())


@pytest.mark.parametrize(
    ("offer", "logged"),
    [
        (["ocpp1.6"], "offered ocpp1.6"),
        (None, "offered no subprotocol"),
        (["ocpp1.6", "ocpp1.5"], "offered ocpp1.6, ocpp1.5"),
    ],
)
def test_other_ocpp_versions_get_400_are_counted_and_logged_once_per_station(
    site: Site, offer: list[str] | None, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answers = [_attempt(site, "cs1", offer) for _ in range(3)] + [_attempt(site, "cs2", offer)]
    assert (
        answers
        == [(400, b"Unsupported OCPP version: expected subprotocol ocpp2.1 or ocpp2.0.1\n")] * 4
    )
    assert site.csms.stats.refused_connections == 4
    assert site.csms.connected_stations == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.levelname, r.getMessage()) for r in warnings] == [
        ("WARNING", f"{station}: refused connection: {logged}; this CSMS speaks ocpp2.1, ocpp2.0.1")
        for station in ("cs1", "cs2")
    ]
    assert all(r.exc_info is None for r in caplog.records)


def test_a_station_offering_16_and_201_is_served_in_201(site: Site) -> None:
    assert _attempt(site, "cs1", ["ocpp1.6", "ocpp2.0.1"])[0] == 101
    assert site.csms.stats.refused_connections == 0
