"""The long-running commands speak systemd's notify protocol: real processes, a fake socket.

Each command runs as a child with ``$NOTIFY_SOCKET`` pointing at a datagram socket the test
binds and ``$WATCHDOG_USEC`` set: it must send ``READY=1`` once serving, then
``WATCHDOG=1`` pings for longer than the watchdog's stall time without calling itself
unhealthy, then ``STOPPING=1`` on SIGTERM, and exit 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridflex.broker import Broker
from gridflex.net import free_port, free_port_block, wait_for_port
from tests.gridflex.test_systemd import FakeSystemd

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def notify_socket() -> Iterator[FakeSystemd]:
    fake = FakeSystemd(f"@gridflex-test-{uuid.uuid4().hex}")
    yield fake
    fake.close()


def _env(fake: FakeSystemd) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_PID", "NOTIFY_SOCKET")}
    return {
        **env,
        "PYTHONPATH": str(ROOT),
        "NOTIFY_SOCKET": fake.address,
        "WATCHDOG_USEC": "1000000",  # pings every 0.5 s
    }


def _site_file(tmp_path: Path, broker: Broker, extra: str = "") -> Path:
    site = tmp_path / "site.toml"
    site.write_text(
        f'[site]\nid = "t{uuid.uuid4().hex[:8]}"\n[mqtt]\nurl = "{broker.url}"\n'
        f'[history]\ndir = "{tmp_path / "history"}"\n{extra}',
        encoding="utf-8",
    )
    return site


def _inverters(base_port: int, count: int) -> str:
    return "".join(
        f'[[assets]]\nid = "inv{i}"\nkind = "inverter"\nhost = "127.0.0.1"\n'
        f"port = {base_port + i}\nmax_charge_w = 11000\n"
        for i in range(count)
    )


#: Pings that span more than the watchdog's default stall time (10 s at 0.5 s a ping).
PINGS_PAST_THE_STALL_TIME = 25


def _run_and_check(
    argv: list[str], fake: FakeSystemd, pings: int = PINGS_PAST_THE_STALL_TIME
) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "gridflex.cli", *argv], cwd=ROOT, env=_env(fake))
    try:
        assert fake.wait_for("READY=1"), f"no READY=1 from {argv[0]}: {fake.lines()}"
        ready_at = len(fake.lines())
        assert fake.wait_for("WATCHDOG=1", count=fake.lines().count("WATCHDOG=1") + pings)
        assert "WATCHDOG=1" in fake.lines()[ready_at:]
        assert not any(line.startswith("STATUS=unhealthy") for line in fake.lines())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        fake.drain(1.0)
        assert "STOPPING=1" in fake.lines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_collect_modbus_is_ready_after_the_first_poll_round_and_pings(
    mosquitto: Broker, tmp_path: Path, notify_socket: FakeSystemd
) -> None:
    base = free_port_block(2)
    sim = subprocess.Popen(
        [sys.executable, "-m", "gridflex.cli", "sim", "inverters", "--count", "2",
         "--base-port", str(base), "--seed", "1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert wait_for_port("127.0.0.1", base + 1)
        site = _site_file(tmp_path, mosquitto, _inverters(base, 2))
        _run_and_check(["collect", "modbus", "--site", str(site)], notify_socket)
        ready = next(d for d in notify_socket.received if "READY=1" in d)
        assert "STATUS=polling 2 inverters" in ready
    finally:
        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=30)


def test_collect_ocpp_is_ready_once_listening_and_pings(
    mosquitto: Broker, tmp_path: Path, notify_socket: FakeSystemd
) -> None:
    port = free_port()
    site = _site_file(tmp_path, mosquitto)
    _run_and_check(
        ["collect", "ocpp", "--site", str(site), "--host", "127.0.0.1", "--port", str(port)],
        notify_socket,
    )
    ready = next(d for d in notify_socket.received if "READY=1" in d)
    assert f"STATUS=CSMS listening on 127.0.0.1:{port}" in ready


def test_pipeline_is_ready_once_the_dataflow_runs_and_pings(
    mosquitto: Broker, tmp_path: Path, notify_socket: FakeSystemd
) -> None:
    site = _site_file(tmp_path, mosquitto)
    _run_and_check(
        ["pipeline", "--site", str(site), "--data-dir", str(tmp_path / "history")],
        notify_socket,
    )


def test_control_is_ready_once_subscribed_and_pings(
    mosquitto: Broker, tmp_path: Path, notify_socket: FakeSystemd
) -> None:
    site = _site_file(tmp_path, mosquitto, _inverters(free_port(), 1))
    # its main loop is the event loop itself: no beats, and still no stall
    _run_and_check(["control", "--site", str(site), "--no-api"], notify_socket)
    ready = next(d for d in notify_socket.received if "READY=1" in d)
    assert "STATUS=control: subscribed" in ready


def test_app_supervises_streamlit_ready_once_it_answers_and_pings(
    tmp_path: Path, notify_socket: FakeSystemd
) -> None:
    port = free_port()
    _run_and_check(
        ["app", "--data-dir", str(tmp_path), "--host", "127.0.0.1", "--port", str(port)],
        notify_socket,
    )
    ready = next(d for d in notify_socket.received if "READY=1" in d)
    assert f"STATUS=app on http://127.0.0.1:{port}/" in ready
