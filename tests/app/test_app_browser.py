"""End to end: ``gridflex app`` on a free port, each page loaded in headless Chromium.

Debian's ``chromium`` (``make test`` and ``.ci/run`` install it) driven by Playwright through
``executable_path``; Playwright's own browser download is never used. Each check waits for
the page's content (Playwright's ``expect`` retries until it shows), never a fixed time.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

import app
from gridflex.contract import Telemetry
from gridflex.net import free_port
from pipelines.history_sink import ParquetStreamWriter, telemetry_row
from tests.history_helpers import BOUNDARY_MS, add_dispatch, make_history

pytestmark = [pytest.mark.slow, pytest.mark.integration]

#: Playwright's wait for each piece of content, ms (a bound on a hang, not a measurement).
WAIT_MS = 60_000
#: Each page (its URL path) and (metric label, value) pairs it shows for make_history.
PAGES = {
    "fleet": [("assets", "2"), ("V2X capable", "1"), ("discharge available", "4.0 kW")],
    "frequency": [("last window", "49.800 Hz"), ("deadband", "±36 mHz")],
    "dispatch": [("commands", "3"), ("clamped", "1"), ("median latency", "230 ms")],
    "billing": [("energy imported", "0.190 kWh"), ("intervals", "2")],
    "asset": [("power", "+3600 W"), ("status", "charging")],
}
#: Charts each page draws.
CHARTS = {"fleet": 2, "frequency": 2, "dispatch": 4, "billing": 1, "asset": 2}


def _route(path: str) -> str:
    """The URL path of a page: the default (first) page is the app's root."""
    return "" if path == app.PAGES[0][2] else path


def _chromium() -> str:
    path = os.environ.get("GRIDFLEX_CHROMIUM") or shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    return path


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gridflex app exited with {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"gridflex app did not answer on {url}: {log.read_text()}")


def _start_app(data_dir: Path, log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    argv = ["app", "--data-dir", str(data_dir), "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gridflex.cli", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _wait_healthy(url, proc, log)
    return url, proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=_chromium(),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def history_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("app")
    data_dir = root / "data"
    make_history(data_dir, readings=20)
    add_dispatch(data_dir)
    url, proc = _start_app(data_dir, root / "app.log")
    try:
        yield url
    finally:
        _stop(proc)


def _metric(page: Page, label: str, value: str) -> None:
    metric = page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)
    )
    expect(metric.get_by_test_id("stMetricValue")).to_have_text(value, timeout=WAIT_MS)


@pytest.mark.parametrize("path", list(PAGES))
def test_each_page_shows_its_data_in_chromium(
    path: str, browser: Browser, history_app: str
) -> None:
    page = browser.new_page()
    try:
        page.goto(history_app + _route(path), timeout=WAIT_MS)
        for label, value in PAGES[path]:
            _metric(page, label, value)
        expect(page.get_by_text("Page not found")).to_have_count(0)
        charts = page.get_by_test_id("stVegaLiteChart")
        expect(charts).to_have_count(CHARTS[path], timeout=WAIT_MS)
        expect(charts.first.locator("canvas, svg").first).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_test_id("stException")).to_have_count(0)
    finally:
        page.close()


def test_a_missing_history_is_a_message_in_chromium(browser: Browser, tmp_path: Path) -> None:
    url, proc = _start_app(tmp_path / "absent", tmp_path / "app.log")
    page = browser.new_page()
    try:
        for path in PAGES:
            page.goto(url + _route(path), timeout=WAIT_MS)
            expect(page.get_by_text("No history folder at")).to_be_visible(timeout=WAIT_MS)
            expect(page.get_by_test_id("stException")).to_have_count(0)
    finally:
        page.close()
        _stop(proc)


def test_the_fleet_page_refreshes_on_its_own_when_new_readings_land(
    browser: Browser, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    make_history(data_dir, readings=5)
    url, proc = _start_app(data_dir, tmp_path / "app.log")
    page = browser.new_page()
    try:
        page.goto(url, timeout=WAIT_MS)
        _metric(page, "assets", "2")
        # A third asset reports, as the pipeline would write it; the page is not reloaded.
        writer = ParquetStreamWriter(data_dir, "telemetry", ts_column="ts_ms", name="late")
        reading = Telemetry(
            site="s1", asset="inv-c", kind="inverter", ts_ms=BOUNDARY_MS, seq=0, boot="b1",
            power_w=1000.0, soc_pct=60.0, status="charging",
        )  # fmt: skip
        writer.add([telemetry_row(reading)])
        writer.flush()
        _metric(page, "assets", "3")
        _metric(page, "fleet power", "+1.0 kW")
    finally:
        page.close()
        _stop(proc)
