"""A bound on HTTP request bodies: ``413 Content Too Large`` past :data:`MAX_BODY_BYTES`.

uvicorn and FastAPI read a request body whole, with no limit of their own, so a client
could make the writer's process hold any amount of memory. :class:`BodyLimit` wraps the
API's ASGI application: a ``Content-Length`` over the bound is answered before the body is
read; a body without one (chunked) is read up to the bound and refused as soon as it
passes it. A body within the bound is handed on unchanged. The largest legitimate body, a
charge profile with its periods, is a few kilobytes.
"""

from __future__ import annotations

import json
from typing import Final

from control.api.allow import Asgi, Message, Receive, Scope, Send

__all__ = ["MAX_BODY_BYTES", "BodyLimit"]

#: Largest request body the API reads, bytes.
MAX_BODY_BYTES: Final = 1 << 20


def _refusal(limit: int) -> bytes:
    return json.dumps({"detail": f"request body larger than {limit} bytes"}).encode()


class BodyLimit:
    """ASGI middleware that refuses HTTP request bodies larger than ``limit`` bytes.

    ``refused`` counts the requests turned away.
    """

    def __init__(self, app: Asgi, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 413 to a body past the bound; pass everything else on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(send)
            return
        body: list[Message] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                body.append(message)
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(send)
                return
            body.append(message)
            if not message.get("more_body", False):
                break
        replay = iter(body)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, send: Send) -> None:
        self.refused += 1
        payload = _refusal(self.limit)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
