"""systemd's notify protocol (gridflex.systemd) against a fake NOTIFY_SOCKET the test binds."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridflex import systemd


class FakeSystemd:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.address = address  # as in $NOTIFY_SOCKET ("@name" = abstract)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bound = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bound)
        self.received: list[list[str]] = []

    def drain(self, timeout_s: float = 0.0) -> list[list[str]]:
        """Wait up to ``timeout_s`` for a datagram, then take every one queued."""
        self.sock.settimeout(timeout_s if timeout_s > 0 else 0.0)
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, TimeoutError):
                return self.received
            self.received.append(data.decode().split("\n"))
            self.sock.settimeout(0.0)

    def wait_for(self, line: str, count: int = 1, timeout_s: float = 60.0) -> bool:
        """Wait until ``line`` has arrived ``count`` times (False after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while self.lines().count(line) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.drain(min(left, 1.0))
        return True

    def lines(self) -> list[str]:
        return [line for datagram in self.received for line in datagram]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake_systemd(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    """An abstract notify socket, exported as $NOTIFY_SOCKET (no watchdog)."""
    fake = FakeSystemd(f"@gridflex-test-{uuid.uuid4().hex}")
    monkeypatch.setenv("NOTIFY_SOCKET", fake.address)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield fake
    fake.close()


def test_without_notify_socket_every_call_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    assert systemd.ready("x") is False
    assert systemd.notify("WATCHDOG=1") is False
    assert systemd.watchdog_interval_s() is None
    assert systemd.Watchdog(interval_s=None).interval_s is None


def test_ready_status_and_stopping_reach_an_abstract_socket(fake_systemd: FakeSystemd) -> None:
    assert systemd.ready("polling 2 inverters")
    assert systemd.status("busy")
    assert systemd.stopping()
    assert fake_systemd.drain(5.0) and fake_systemd.wait_for("STOPPING=1")
    assert fake_systemd.received[0] == ["READY=1", "STATUS=polling 2 inverters"]
    assert fake_systemd.received[1] == ["STATUS=busy"]
    assert fake_systemd.received[2] == ["STOPPING=1"]


def test_a_path_socket_works_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = Path(f"/tmp/gf-{uuid.uuid4().hex[:12]}.sock")  # short: sun_path holds 108 bytes
    fake = FakeSystemd(str(path))
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert systemd.ready()
        assert fake.wait_for("READY=1", timeout_s=5.0)
    finally:
        fake.close()
        path.unlink()


def test_a_vanished_socket_does_not_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", f"@gridflex-nobody-{uuid.uuid4().hex}")
    assert systemd.ready() is False


def test_watchdog_interval_is_half_of_watchdog_usec(
    fake_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # another process's watchdog
    assert systemd.watchdog_interval_s() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert systemd.watchdog_interval_s() is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_stalled_loop_stops_pinging_and_a_moving_one_pings_again(
    fake_systemd: FakeSystemd,
) -> None:
    clock = FakeClock()
    polls = [0]
    dog = systemd.Watchdog(lambda: polls[0], stall_s=10.0, interval_s=5.0, clock=clock)
    for _ in range(3):  # the loop goes round between pings
        polls[0] += 1
        clock.now += 5.0
        assert dog.tick()
    clock.now += 5.0  # no poll for 5 s: still within stall_s
    assert dog.tick()
    clock.now += 6.0  # 11 s without a poll: stalled
    assert not dog.tick()
    clock.now += 5.0
    assert not dog.tick()
    polls[0] += 1  # the loop moves again
    assert dog.tick()
    fake_systemd.drain(1.0)
    lines = fake_systemd.lines()
    assert lines.count("WATCHDOG=1") == 5
    assert any(line.startswith("STATUS=unhealthy: main loop stalled") for line in lines)


def test_a_loop_that_never_beats_is_not_a_stall_one_that_stops_beating_is(
    fake_systemd: FakeSystemd,
) -> None:
    clock = FakeClock()
    idle = systemd.Watchdog(stall_s=10.0, interval_s=5.0, clock=clock)  # control: no beats
    beating = systemd.Watchdog(stall_s=10.0, interval_s=5.0, clock=clock)
    beating.beat()
    assert beating.tick()
    for _ in range(4):  # 20 s
        clock.now += 5.0
        assert idle.tick()
    assert not beating.tick()  # beat once, then nothing for 20 s
    beating.beat()
    assert beating.tick()


def test_a_broker_away_longer_than_the_grace_stops_the_pings(fake_systemd: FakeSystemd) -> None:
    clock = FakeClock()
    up = [True]
    dog = systemd.Watchdog(
        connected=lambda: up[0], broker_grace_s=30.0, interval_s=5.0, clock=clock
    )
    dog.beat()
    assert dog.tick()
    up[0] = False
    for _ in range(6):  # 30 s of retrying: within the grace
        clock.now += 5.0
        dog.beat()
        assert dog.tick()
    clock.now += 5.0
    dog.beat()
    assert not dog.tick()
    up[0] = True
    dog.beat()
    assert dog.tick()


def test_broker_up_reads_a_method_and_a_property() -> None:
    class Method:
        def connected(self) -> bool:
            return True

    class Property:
        @property
        def connected(self) -> bool:
            return False

    up = systemd.broker_up(Method())
    down = systemd.broker_up(Property())
    assert up is not None and up() is True
    assert down is not None and down() is False
    assert systemd.broker_up(object()) is None


def test_supervised_pings_every_half_watchdog_usec_and_says_stopping(
    fake_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")

    async def _main() -> float | None:
        subscribed = asyncio.Event()
        async with systemd.supervised(ready_when=subscribed.wait, ready_text="up") as dog:
            for _ in range(50):  # the main loop: beats while it runs
                dog.beat()
                if dog.pings >= 3:
                    subscribed.set()
                if dog.pings >= 5:
                    break
                await asyncio.sleep(0.05)
            return dog.interval_s

    interval = asyncio.run(_main())
    assert interval == 0.1
    fake_systemd.drain(1.0)
    lines = fake_systemd.lines()
    assert lines.count("WATCHDOG=1") >= 5
    assert "READY=1" in lines and "STATUS=up" in lines
    assert lines[-1] == "STOPPING=1"
