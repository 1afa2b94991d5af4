"""A throw-away PostgreSQL cluster on loopback for the benchmarks, and timed queries in it.

The server binaries are looked up on PATH and in ``/usr/lib/postgresql/*/bin`` (Debian's
``postgresql``). The cluster lives in a folder the caller gives (``initdb``), listens on
127.0.0.1 and a socket in that folder, runs as the ``postgres`` user when the benchmark
runs as root (the server refuses root), and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

__all__ = ["Postgres", "pg_bin", "run_query"]


def pg_bin() -> Path | None:
    """The folder of PostgreSQL's server binaries, or None."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@dataclass
class Postgres:
    """A throw-away PostgreSQL cluster on loopback."""

    bin_dir: Path
    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def _as_user(self) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--"]
        return []

    def start(self) -> None:
        """initdb, then start the server and wait until it answers."""
        data = self.root / "pgdata"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        subprocess.run(
            [*self._as_user, str(self.bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--locale=C"],
            check=True, capture_output=True,
        )  # fmt: skip
        options = [
            "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.root),
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "work_mem=64MB", "-c", "shared_buffers=512MB",
            "-c", "maintenance_work_mem=512MB", "-c", "max_wal_size=8GB",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            [*self._as_user, str(self.bin_dir / "postgres"), *options],
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "server.log").open("wb"),
        )
        for _ in range(300):
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not start; see {self.root / 'server.log'}")

    def postmaster(self) -> psutil.Process:
        """The server process (the child of ``runuser`` when run as root)."""
        assert self.proc is not None
        top = psutil.Process(self.proc.pid)
        for proc in [top, *top.children(recursive=True)]:
            if proc.name() == "postgres" and proc.ppid() in (top.pid, top.ppid()):
                return proc
        return top

    def psql(self, sql: str, *, stdin: Any = None) -> str:
        """Run SQL through psql; its standard output."""
        done = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-At", "-c", sql],
            stdin=stdin, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout

    def stop(self) -> None:
        """Stop the server (fast shutdown) by its PID."""
        if self.proc is None:
            return
        with contextlib.suppress(psutil.Error):
            self.postmaster().terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _pg_cpu(postmaster: psutil.Process) -> float:
    """CPU seconds of the server: itself, its live children and the children it reaped."""
    times = postmaster.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in postmaster.children(recursive=True):
        try:
            ct = child.cpu_times()
        except psutil.Error:
            continue
        total += ct.user + ct.system
    return total


def run_query(pg: Postgres, query: str, repeat: int) -> dict[str, Any]:
    """Run ``query`` ``repeat`` times (a psql each, output discarded): times, CPU, peak PSS."""
    postmaster = pg.postmaster()
    sql = f"\\timing on\n\\o /dev/null\n{query.strip()};\n"
    times, cpus, peak = [], [], 0.0
    for _ in range(repeat):
        stop = threading.Event()
        peaks: list[float] = [0.0]

        def sample(stop: threading.Event = stop, peaks: list[float] = peaks) -> None:
            while not stop.wait(0.05):
                total = 0
                for proc in [postmaster, *postmaster.children(recursive=True)]:
                    try:
                        total += proc.memory_full_info().pss
                    except psutil.Error:
                        continue
                peaks[0] = max(peaks[0], total / 2**20)

        sampler = threading.Thread(target=sample, daemon=True)
        before = _pg_cpu(postmaster)
        sampler.start()
        done = subprocess.run(
            [str(pg.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(pg.port), "-U", "postgres", "-d", "postgres"],
            input=sql, capture_output=True, text=True, check=True,
        )  # fmt: skip
        stop.set()
        sampler.join()
        time.sleep(0.2)  # the backend exits and is reaped: its CPU moves to children_*
        cpus.append(_pg_cpu(postmaster) - before)
        timing = [ln for ln in done.stdout.splitlines() if ln.startswith("Time:")]
        times.append(float(timing[-1].split()[1]) / 1000)
        peak = max(peak, peaks[0])
    return {"times": times, "cpu": cpus, "peak_mib": peak}
