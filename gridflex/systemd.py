"""systemd's notify protocol without a dependency: readiness, status, watchdog, stopping.

A unit with ``Type=notify`` waits for ``READY=1`` before it counts the service as started;
with ``WatchdogSec=`` it restarts a service that has not sent ``WATCHDOG=1`` for that long.
systemd passes the socket in ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
socket) and the watchdog period in ``$WATCHDOG_USEC`` (``$WATCHDOG_PID``, when set, names
the process the watchdog is for). Every function here is a no-op when ``$NOTIFY_SOCKET`` is
unset, so the commands call them unconditionally (see ``sd_notify(3)``).

The watchdog is pinged only while the process is healthy (:class:`Watchdog`): the loop that
pings is alive (the pinger runs on it, so a blocked event loop stops the pings), the
command's main loop made progress within ``stall_s``, and, when the command has a broker,
it is connected or was connected within ``broker_grace_s`` (the client retries on its own;
a broker that has been away longer is systemd's to handle, by a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator

__all__ = [
    "Watchdog",
    "broker_up",
    "notify",
    "ready",
    "status",
    "stopping",
    "supervised",
    "supervised_thread",
    "watchdog_interval_s",
]

log = logging.getLogger(__name__)


def _address() -> str | None:
    """The notify socket's address (abstract names start with a NUL byte), or None."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return None
    if path.startswith("@"):
        return "\0" + path[1:]
    return path


def notify(*lines: str) -> bool:
    """Send ``lines`` (``KEY=value`` each) as one datagram to ``$NOTIFY_SOCKET``.

    Returns:
        True when sent; False when there is no notify socket or sending failed (logged
        once at DEBUG: a service must not stop because systemd went away).

    """
    address = _address()
    if address is None or not lines:
        return False
    payload = "\n".join(lines).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, address)
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def ready(text: str | None = None) -> bool:
    """``READY=1`` (with ``STATUS=text`` when given): the service is serving."""
    return notify("READY=1", *([f"STATUS={text}"] if text else []))


def status(text: str) -> bool:
    """``STATUS=text``: one line ``systemctl status`` shows."""
    return notify(f"STATUS={text}")


def stopping(text: str | None = None) -> bool:
    """``STOPPING=1``: the service is shutting down cleanly."""
    return notify("STOPPING=1", *([f"STATUS={text}"] if text else []))


def watchdog_interval_s() -> float | None:
    """How often to ping: half of ``$WATCHDOG_USEC``; None when no watchdog is asked for.

    None too when ``$WATCHDOG_PID`` names another process (the watchdog is not ours), or
    when there is no notify socket to ping.
    """
    if _address() is None:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2_000_000


def broker_up(client: object) -> Callable[[], bool] | None:
    """A check that ``client`` (an MQTT client) is connected; None when it cannot tell.

    Works with a ``connected()`` method (the asyncio client) and a ``connected`` property
    (the paho client).
    """
    if not hasattr(client, "connected"):
        return None

    def _up() -> bool:
        value = client.connected
        return bool(value() if callable(value) else value)

    return _up


class Watchdog:
    """Pings ``WATCHDOG=1`` every half watchdog period while the process is healthy.

    Args:
        progress: Returns a value that changes whenever the main loop goes round (a
            counter of polls, ticks or batches): unchanged for ``stall_s``, the loop has
            stalled and the pings stop. None: the count of :meth:`beat` calls, once the
            main loop has beaten at least once; a process that never beats (its main loop
            is the event loop itself, as in ``gridflex control``) is watched through the
            pinger, which runs on that loop, and its broker only.
        connected: Returns whether the broker connection is up (None: no broker).
        stall_s: How long the main loop may go without progress (default: the watchdog
            period, ``2 x interval``, at least 10 s).
        broker_grace_s: How long the broker may be away, while the client retries, before
            the pings stop.
        interval_s: Ping period (default :func:`watchdog_interval_s`; None = no pings).
        clock: Monotonic seconds (tests pass a fake).

    """

    def __init__(
        self,
        progress: Callable[[], Hashable] | None = None,
        *,
        connected: Callable[[], bool] | None = None,
        stall_s: float | None = None,
        broker_grace_s: float = 60.0,
        interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s if interval_s is not None else watchdog_interval_s()
        self.beats = 0
        self._beats_only = progress is None
        self._progress: Callable[[], Hashable] = progress or (lambda: self.beats)
        self._connected = connected
        self._clock = clock
        self.stall_s = stall_s if stall_s is not None else max(10.0, 2 * (self.interval_s or 0))
        self.broker_grace_s = broker_grace_s
        now = clock()
        self._last_value: Hashable = self._progress()
        self._last_progress = now
        self._last_connected = now
        self.pings = 0
        self._unhealthy: str | None = None

    def beat(self) -> None:
        """The main loop went round once (when no ``progress`` callable was given)."""
        self.beats += 1

    def check(self) -> str | None:
        """Why the process is unhealthy now, or None when it is healthy."""
        now = self._clock()
        value = self._progress()
        if value != self._last_value:
            self._last_value = value
            self._last_progress = now
        elif self._beats_only and self.beats == 0:
            self._last_progress = now  # nothing beats: no stall to see
        if self._connected is not None and self._connected():
            self._last_connected = now
        if now - self._last_progress > self.stall_s:
            return f"main loop stalled for {now - self._last_progress:.1f} s"
        if self._connected is not None and now - self._last_connected > self.broker_grace_s:
            return f"broker away for {now - self._last_connected:.1f} s"
        return None

    def tick(self) -> bool:
        """Ping once if healthy; True when a ``WATCHDOG=1`` was sent."""
        reason = self.check()
        if reason != self._unhealthy:
            if reason is not None:
                log.error("watchdog: not pinging systemd: %s", reason)
                status(f"unhealthy: {reason}")
            elif self._unhealthy is not None:
                log.info("watchdog: healthy again")
            self._unhealthy = reason
        if reason is not None:
            return False
        sent = notify("WATCHDOG=1")
        self.pings += int(sent)
        return sent

    async def run(self) -> None:
        """Ping every :attr:`interval_s` on the running loop until cancelled (no-op without)."""
        if self.interval_s is None:
            return
        while True:
            self.tick()
            await asyncio.sleep(self.interval_s)

    def start(self) -> asyncio.Task[None] | None:
        """:meth:`run` as a task on the running loop; None when there is no watchdog."""
        if self.interval_s is None:
            return None
        return asyncio.get_running_loop().create_task(self.run(), name="sd-watchdog")


@contextlib.asynccontextmanager
async def supervised(
    progress: Callable[[], Hashable] | None = None,
    *,
    connected: Callable[[], bool] | None = None,
    ready_when: Callable[[], Awaitable[object]] | None = None,
    ready_text: str = "serving",
    stall_s: float | None = None,
) -> AsyncIterator[Watchdog]:
    """Run a :class:`Watchdog` on the running loop for the ``async with`` body.

    ``ready_when`` (awaited in a task beside the body) sends ``READY=1`` with
    ``STATUS=ready_text`` once it returns; without it the caller sends :func:`ready`
    itself. ``STOPPING=1`` is sent when the body ends. A no-op without ``$NOTIFY_SOCKET``.
    """
    dog = Watchdog(progress, connected=connected, stall_s=stall_s)
    tasks = [t for t in (dog.start(),) if t is not None]
    if ready_when is not None and _address() is not None:

        async def _ready() -> None:
            await ready_when()
            ready(ready_text)

        tasks.append(asyncio.get_running_loop().create_task(_ready(), name="sd-ready"))
    try:
        yield dog
    finally:
        stopping()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.contextmanager
def supervised_thread(
    progress: Callable[[], Hashable],
    *,
    is_ready: Callable[[], bool],
    ready_text: str = "serving",
    poll_s: float = 0.1,
) -> Iterator[Watchdog]:
    """A :class:`Watchdog` in a daemon thread, for a main loop that is not asyncio.

    The thread sends ``READY=1`` once ``is_ready()`` is true (checked every ``poll_s``),
    then pings every half watchdog period while ``progress`` moves; ``STOPPING=1`` when
    the body ends. A no-op without ``$NOTIFY_SOCKET``.
    """
    dog = Watchdog(progress)
    stop = threading.Event()
    thread: threading.Thread | None = None
    if _address() is not None:

        def _loop() -> None:
            while not stop.is_set() and not is_ready():
                stop.wait(poll_s)
            if stop.is_set():
                return
            ready(ready_text)
            if dog.interval_s is None:
                return
            while True:
                try:
                    dog.tick()
                except Exception:  # a failing check must not kill the pinger silently
                    log.exception("watchdog check failed")
                if stop.wait(dog.interval_s):
                    return

        thread = threading.Thread(target=_loop, name="sd-watchdog", daemon=True)
        thread.start()
    try:
        yield dog
    finally:
        stop.set()
        stopping()
        if thread is not None:
            thread.join(1.0)
