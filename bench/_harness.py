"""What the benchmark scripts share: stopping processes, CPU accounting, table cells."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil

__all__ = [
    "busiest_processes",
    "busy_s",
    "fmt",
    "machine_busy_s",
    "rss_mib",
    "stop_process",
    "tree",
]


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int:
    """SIGTERM ``proc`` (by PID), wait up to ``timeout_s``, then kill; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and its descendants (those alive now)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def busy_s(procs: list[psutil.Process]) -> float:
    """CPU seconds used so far by ``procs`` (a process that has gone counts 0)."""
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def rss_mib(procs: list[psutil.Process]) -> float:
    """Resident memory of ``procs`` together, MiB."""
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def busiest_processes(sample_s: float = 1.0, top: int = 3) -> list[tuple[float, str]]:
    """The ``top`` processes by CPU % over ``sample_s`` (this one excluded)."""
    procs = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if p.pid != os.getpid()]
    for proc in procs:
        try:
            proc.cpu_percent(None)
        except psutil.Error:
            continue
    time.sleep(sample_s)
    usage = []
    for proc in procs:
        try:
            pct = proc.cpu_percent(None)
            cmd = " ".join(proc.info["cmdline"] or [proc.info["name"] or "?"])
        except psutil.Error:
            continue
        usage.append((pct, f"{proc.pid} {cmd[:70]}"))
    return sorted(usage, reverse=True)[:top]


def fmt(value: float | None, spec: str) -> str:
    """A table cell: ``value`` formatted, or ``-`` when there is none."""
    return "-" if value is None else format(value, spec)
