"""``[api] allow_from``: refuse clients from outside the listed networks before any auth.

:class:`AllowFrom` wraps the API's ASGI application: an HTTP request from an address outside
the list gets ``403 Forbidden`` (a WebSocket handshake too: a close before the accept is a
403 in uvicorn), before the bearer token is looked at. Each refused address is logged once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from gridflex.access import IpNetwork, address_allowed

__all__ = ["AllowFrom"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Refused addresses remembered for log-once; beyond this, refusals are counted only.
_LOGGED_MAX = 1024

_BODY = json.dumps({"detail": "address not allowed"}).encode()


class AllowFrom:
    """ASGI middleware that lets through only clients inside ``allow_from``.

    ``refused`` counts the requests and handshakes turned away.
    """

    def __init__(self, app: Asgi, allow_from: Sequence[IpNetwork]) -> None:
        self.app = app
        self.allow_from = tuple(allow_from)
        self.refused = 0
        self._logged: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 403 to a client outside the list; pass everything else on."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        host = client[0] if client else None
        if address_allowed(host, self.allow_from):
            await self.app(scope, receive, send)
            return
        self.refused += 1
        key = str(host)
        if key not in self._logged and len(self._logged) < _LOGGED_MAX:
            self._logged.add(key)
            log.warning("API: refused %s: not in [api] allow_from", key)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_BODY)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _BODY})
