"""Scraping a process's ``/metrics`` and reading samples, for the metrics tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

ROOT = Path(__file__).resolve().parents[1]

Samples = list[Sample]


def scrape(port: int) -> Samples:
    """GET /metrics and parse it with the client library's parser (every sample)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode("utf-8")
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels``; None when absent."""
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def scrape_until(
    port: int,
    proc: subprocess.Popen[bytes],
    condition: Callable[[Samples], bool],
    timeout_s: float = 40.0,
) -> Samples:
    """Scrape until ``condition`` holds (the process must stay up); the last scrape.

    Fails the test, with the process's stderr, when the process exits or the time runs
    out (a generous bound for a loaded machine; nothing is measured against it).
    """
    deadline = time.monotonic() + timeout_s
    samples: Samples = []
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"process exited {proc.returncode}: {stderr_of(proc)}")
        try:
            samples = scrape(port)
        except (urllib.error.URLError, ConnectionError):
            samples = []
        if samples and condition(samples):
            return samples
        if time.monotonic() > deadline:
            names = sorted({s.name for s in samples})
            raise AssertionError(f"condition not met; scraped {names}; {stderr_of(proc)}")
        time.sleep(0.3)


def gridflex(log: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start ``python -m gridflex.cli ARGS`` from the repository; its stderr goes to ``log``.

    A file, not a pipe: a pipe nobody reads would block a chatty process.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gridflex.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    LOGS[proc.pid] = log
    return proc


#: Where each started process logs (by pid), for the failure messages.
LOGS: dict[int, Path] = {}


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then the exit code (killed after 30 s)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def stderr_of(proc: subprocess.Popen[bytes]) -> str:
    """What the process wrote on stderr so far, the last 3,000 characters."""
    log = LOGS.get(proc.pid)
    if log is None or not log.exists():
        return ""
    return log.read_text(encoding="utf-8", errors="replace")[-3000:]
