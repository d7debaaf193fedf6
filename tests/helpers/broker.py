"""Broker faults for tests: the RabbitMQ application stopped, and always started again.

Other test runs share the broker; `broker_stopped` holds an exclusive lock on
`/tmp/deskledger-broker-fault.lock` so that two fault tests never overlap, and starts the
application again whatever happens in between (the CI script also restarts a stopped app).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import subprocess
from collections.abc import AsyncIterator

LOCK_PATH = "/tmp/deskledger-broker-fault.lock"
RABBITMQCTL_TIMEOUT = 120


async def rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), RABBITMQCTL_TIMEOUT)
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {output.decode()}")


@contextlib.asynccontextmanager
async def broker_stopped() -> AsyncIterator[None]:
    """`rabbitmqctl stop_app` for the duration of the block; `start_app` afterwards."""
    lock = await asyncio.to_thread(open, LOCK_PATH, "a")
    with lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        try:
            await rabbitmqctl("stop_app")
            yield
        finally:
            try:
                await rabbitmqctl("start_app")
                await rabbitmqctl("await_startup")
            except BaseException:
                # Cancelled or timed out: the broker must come back even so.
                subprocess.run(  # noqa: ASYNC221 - last resort, the loop may be gone
                    ["rabbitmqctl", "start_app"], check=False, timeout=RABBITMQCTL_TIMEOUT
                )
                raise
