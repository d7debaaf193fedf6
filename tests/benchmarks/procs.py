"""Subprocesses of a benchmark: pinned to a core, logged to a file, stopped by their own pid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.benchmarks.cost import usage_of
from tests.benchmarks.environment import REPO

# The server side gets core 0, the load generator core 1 (PostgreSQL and RabbitMQ float).
SERVER_CORE = 0
CLIENT_CORE = 1


def pinned(argv: Sequence[str], core: int | None) -> list[str]:
    """`argv` run on one core when `taskset` exists and the machine has that core."""
    if core is None or shutil.which("taskset") is None or core not in os.sched_getaffinity(0):
        return list(argv)
    return ["taskset", "-c", str(core), *argv]


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


@dataclass
class Process:
    process: asyncio.subprocess.Process
    log_path: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (0 once it is gone)."""
        return usage_of([self.process.pid]).cpu_seconds

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def failed(self, what: str) -> RuntimeError:
        tail = "\n".join(self.log().splitlines()[-30:])
        return RuntimeError(f"{what} (log {self.log_path}):\n{tail}")


@contextlib.asynccontextmanager
async def running(
    argv: Sequence[str], env: dict[str, str], log_path: Path, core: int | None = None
) -> AsyncIterator[Process]:
    """A long-running subprocess, SIGTERMed (then killed) when the block ends."""
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *pinned(argv, core), env=env, cwd=REPO, stdout=log_file, stderr=log_file
        )
    proc = Process(process, log_path)
    try:
        yield proc
    finally:
        await stop(process)


async def stop(process: asyncio.subprocess.Process, grace: float = 30) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            process.kill()
            await process.wait()


async def until_http_ok(proc: Process, url: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.process.returncode is not None:
                raise proc.failed(f"exited {proc.process.returncode} before it was ready")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as response:
                    if response.status < 500:
                        return
            await asyncio.sleep(0.1)
    raise proc.failed(f"not ready within {within} s")


async def until_logged(proc: Process, event: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    needle = f'"event": "{event}"'
    while time.monotonic() < deadline:
        if needle in proc.log():
            return
        if proc.process.returncode is not None:
            raise proc.failed(f"exited {proc.process.returncode} before logging {event}")
        await asyncio.sleep(0.05)
    raise proc.failed(f"did not log {event} within {within} s")


@dataclass
class Finished:
    returncode: int
    seconds: float
    peak_rss_mb: float  # VmHWM of the process, in MB (10^6 bytes)


RSS_POLL = 0.02


def _vm_hwm_kib(pid: int) -> int:
    """The process's peak resident set so far (0 once its memory is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


async def run_to_end(
    argv: Sequence[str], env: dict[str, str], log_path: Path, core: int | None = None
) -> Finished:
    """Run a one-shot subprocess to its end; its wall time and peak RSS.

    The peak is VmHWM polled every RSS_POLL s until exit. Not wait4's ru_maxrss: Linux carries
    the forking parent's high-water mark over exec into it, so a child of a big harness would
    report the harness's size. VmHWM is per address space and starts afresh at exec (taskset
    execs the command in place, so the pid is the measured program's own).
    """

    def execute() -> Finished:
        with log_path.open("wb") as log_file:
            started = time.perf_counter()
            child = subprocess.Popen(
                pinned(argv, core), env=env, cwd=REPO, stdout=log_file, stderr=log_file
            )
            peak = 0
            while child.poll() is None:
                peak = max(peak, _vm_hwm_kib(child.pid))
                time.sleep(RSS_POLL)
            return Finished(child.returncode, time.perf_counter() - started, peak * 1024 / 1e6)

    return await asyncio.to_thread(execute)
