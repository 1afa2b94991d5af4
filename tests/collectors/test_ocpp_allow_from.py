"""``[ocpp] allow_from``: the CSMS refuses a station's handshake from an unlisted address."""

from __future__ import annotations

import ipaddress

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gridflex.net import free_port
from tests.collectors.test_ocpp_csms import PASSWORD, Site, basic, loop_thread, spec
from tests.loop_helpers import LoopThread

pytestmark = pytest.mark.integration

__all__ = ["loop_thread"]  # the fixture, imported for this module's tests


def _attempt(lt: LoopThread, site: Site, source: str, password: str = PASSWORD) -> int:
    async def go() -> int:
        url = f"ws://127.0.0.1:{site.csms.port}/ocpp/cs1"
        try:
            async with connect(
                url,
                subprotocols=["ocpp2.1"],  # type: ignore[list-item]
                additional_headers=basic("cs1", password),
                local_addr=(source, 0),
            ):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    return lt.run(go())


def test_a_station_outside_allow_from_gets_403_even_with_the_right_password(
    loop_thread: LoopThread,
) -> None:
    site = Site(
        loop_thread,
        f"mqtt://127.0.0.1:{free_port()}",
        [spec("cs1", "2.1")],
        allow_from=(ipaddress.ip_network("127.0.0.1/32"),),
    )
    loop_thread.run(site.csms.start())
    try:
        assert _attempt(loop_thread, site, "127.0.0.2") == 403
        assert _attempt(loop_thread, site, "127.0.0.2", "a-wrong-password-000") == 403
        assert site.csms.stats.refused_connections == 2
        assert _attempt(loop_thread, site, "127.0.0.1") == 101
        assert _attempt(loop_thread, site, "127.0.0.1", "a-wrong-password-000") == 401
    finally:
        site.close()


def test_without_allow_from_any_address_may_try_its_password(loop_thread: LoopThread) -> None:
    site = Site(loop_thread, f"mqtt://127.0.0.1:{free_port()}", [spec("cs1", "2.1")])
    loop_thread.run(site.csms.start())
    try:
        assert _attempt(loop_thread, site, "127.0.0.2") == 101
    finally:
        site.close()
