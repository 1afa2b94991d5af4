"""Fan-out of the live messages to the API's WebSocket clients.

The control service calls :meth:`StreamHub.publish` for each telemetry reading, command
and ack it sees; each ``GET /api/v1/stream`` client iterates its own
:meth:`StreamHub.subscribe`. A client that cannot keep up loses its oldest messages (counted
in :attr:`StreamHub.dropped`), never slows the service nor the other clients.
"""

from __future__ import annotations

import asyncio

__all__ = ["StreamHub", "Subscription"]


class Subscription:
    """One subscriber's messages, ``(topic, payload)``; an async iterator until closed."""

    def __init__(self, hub: StreamHub) -> None:
        self._hub = hub
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(hub.queue_size)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[str, bytes]:
        if self not in self._hub._subscriptions:
            raise StopAsyncIteration
        return await self.queue.get()

    async def aclose(self) -> None:
        """Unsubscribe; what was queued is dropped."""
        self._hub._subscriptions.discard(self)


class StreamHub:
    """Per-subscriber bounded queues; publish and subscribe on one event loop's thread."""

    def __init__(self, queue_size: int = 1000) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size: expected >= 1, got {queue_size!r}")
        self.queue_size = queue_size
        self._subscriptions: set[Subscription] = set()
        #: Messages dropped because a subscriber was behind, over all subscribers.
        self.dropped = 0

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscriptions)

    def publish(self, topic: str, payload: bytes) -> None:
        """Hand one message to every subscriber; never blocks."""
        for sub in self._subscriptions:
            if sub.queue.full():
                sub.queue.get_nowait()
                self.dropped += 1
            sub.queue.put_nowait((topic, payload))

    def subscribe(self) -> Subscription:
        """A subscription to every message published from now on (registered at once)."""
        sub = Subscription(self)
        self._subscriptions.add(sub)
        return sub
