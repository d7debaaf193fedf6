"""Broker faults for tests, always undone: the application stopped, a memory alarm.

Other test runs share the broker; each fault holds exclusive locks on both lock files in use
(`/tmp/deskledger-broker-fault.lock`, and `/tmp/deskledger-service-fault.lock` of the fault
tests), always in that order, so that no two fault tests overlap; and it undoes itself whatever
happens in between (the CI script also restarts a stopped app and resets the alarm).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import subprocess
from collections.abc import AsyncIterator

LOCK_PATHS = ("/tmp/deskledger-broker-fault.lock", "/tmp/deskledger-service-fault.lock")
RABBITMQCTL_TIMEOUT = 120
DEFAULT_WATERMARK = "0.4"  # what .ci/services restores


async def rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), RABBITMQCTL_TIMEOUT)
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {output.decode()}")


@contextlib.asynccontextmanager
async def _fault_lock() -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for path in LOCK_PATHS:
            lock = stack.enter_context(await asyncio.to_thread(open, path, "a"))
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        yield


@contextlib.asynccontextmanager
async def _undone_by(*undo: str) -> AsyncIterator[None]:
    try:
        yield
    finally:
        try:
            await rabbitmqctl(*undo)
            await rabbitmqctl("await_startup")
        except BaseException:
            # Cancelled or timed out: the broker must be restored even so.
            subprocess.run(  # noqa: ASYNC221 - last resort, the loop may be gone
                ["rabbitmqctl", *undo], check=False, timeout=RABBITMQCTL_TIMEOUT
            )
            raise


@contextlib.asynccontextmanager
async def broker_stopped() -> AsyncIterator[None]:
    """`rabbitmqctl stop_app` for the duration of the block; `start_app` afterwards."""
    async with _fault_lock(), _undone_by("start_app"):
        await rabbitmqctl("stop_app")
        yield


@contextlib.asynccontextmanager
async def broker_memory_alarm() -> AsyncIterator[None]:
    """A memory alarm (watermark 0: publishers are blocked) for the duration of the block."""
    async with _fault_lock(), _undone_by("set_vm_memory_high_watermark", DEFAULT_WATERMARK):
        await rabbitmqctl("set_vm_memory_high_watermark", "0")
        yield
