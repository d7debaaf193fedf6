"""Breaking and restoring the machine's RabbitMQ and PostgreSQL, and running real workers.

Every fault that stops or alters a shared service runs inside `service_fault()`: an fcntl lock
(other engineers' fault tests use the same services) and, whatever happened, `.ci/services` in
the teardown, which starts both services again and resets the memory watermark. Commands run as
subprocesses of the event loop so the load driver keeps sending while a service goes down.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

import aio_pika
import asyncpg

from shared.broker import TopologyNames
from shared.settings import Settings
from tests.helpers.services import REPO, deskledger

LOCK_PATH = "/tmp/deskledger-service-fault.lock"  # agreed with the other teams
PG_CLUSTER = ("15", "main")


async def run(*command: str, within: float = 120, check: bool = True) -> str:
    """Run a command without blocking the loop; its output (stderr included)."""
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = output.decode(errors="replace")
    if check and process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{text}")
    return text


def via(url: str, port: int) -> str:
    """`url` with its host and port replaced by 127.0.0.1:`port` (a proxy's), credentials kept."""
    parts = urlsplit(url)
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _lock() -> int:
    descriptor = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o666)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    return descriptor


@contextlib.asynccontextmanager
async def service_fault() -> AsyncIterator[None]:
    """Hold the fault lock; restore both services afterwards, whatever happened."""
    descriptor = await asyncio.to_thread(_lock)
    try:
        yield
    finally:
        try:
            await run("bash", str(REPO / ".ci" / "services"), within=300)
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
            os.close(descriptor)


async def broker_stop_app() -> None:
    await run("rabbitmqctl", "-q", "stop_app")


async def broker_start_app() -> None:
    await run("rabbitmqctl", "-q", "start_app")
    await run("rabbitmqctl", "-q", "await_startup")


async def broker_kill() -> None:
    """SIGKILL the Erlang VM: no goodbye to any client, nothing flushed but what was fsynced."""
    pid = int((await run("rabbitmqctl", "-q", "eval", "os:getpid().")).strip().strip('"'))
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.1)


async def broker_start() -> None:
    await run("rabbitmq-server", "-detached")
    # await_startup fails at once until the new node has registered with epmd.
    for _ in range(60):
        try:
            await run("rabbitmqctl", "-q", "await_startup", within=180)
        except RuntimeError:
            await asyncio.sleep(1)
        else:
            return
    await run("rabbitmqctl", "-q", "await_startup", within=180)


async def memory_alarm(on: bool) -> None:
    await run("rabbitmqctl", "-q", "set_vm_memory_high_watermark", "0" if on else "0.4")


async def postgres_stop() -> None:
    await run("pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, "stop", "-m", "immediate")


async def postgres_start() -> None:
    await run("pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, "start")


FAILED_LOGS = REPO / "build" / "chaos" / "logs"


def keep_log(path: Path, name: str) -> None:
    """Keep a subprocess's log after a failed test (its temporary directory goes away)."""
    FAILED_LOGS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, FAILED_LOGS / name)


@dataclass
class WorkerProcess:
    process: asyncio.subprocess.Process
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def stop(self, within: float = 60) -> int:
        """SIGTERM and wait; the exit code."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(f"worker ignored SIGTERM for {within} s:\n{self.log()}") from None


@contextlib.asynccontextmanager
async def worker_process(
    settings: Settings, fault_point: str = "", concurrency: int = 1
) -> AsyncIterator[WorkerProcess]:
    """A real `deskledger worker` subprocess; stopped (SIGTERM, then SIGKILL) on exit."""
    # The worker reads every setting, the ingress's port too (0, "any", is not valid there).
    listening = settings.replace(http_port=settings.http_port or 8080)
    with tempfile.TemporaryDirectory(prefix="deskledger-worker-") as tmp:
        log_path = Path(tmp) / "worker.log"
        with log_path.open("wb") as log_file:
            process = await deskledger(
                listening,
                "worker",
                "--concurrency",
                str(concurrency),
                extra_env={"DESKLEDGER_FAULT_POINT": fault_point},
                stdout=log_file,
                stderr=log_file,
            )
        worker = WorkerProcess(process, log_path)
        try:
            yield worker
        except BaseException:
            keep_log(log_path, f"worker-{process.pid}.log")
            raise
        finally:
            if process.returncode is None:
                with contextlib.suppress(AssertionError):
                    await worker.stop(within=30)


async def queue_state(settings: Settings) -> tuple[int, int, int]:
    """(ready messages, consumers, dead letters) without declaring anything."""
    names = TopologyNames.for_prefix(settings.amqp_prefix)
    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        main = await channel.declare_queue(names.queue, passive=True)
        dead = await channel.declare_queue(names.dead_letter_queue, passive=True)
        return (
            main.declaration_result.message_count or 0,
            main.declaration_result.consumer_count or 0,
            dead.declaration_result.message_count or 0,
        )


async def wait_consumers(
    settings: Settings, count: int, within: float = 60, *workers: WorkerProcess
) -> None:
    """Until the webhook queue has `count` consumers (a worker is really consuming)."""
    deadline = time.monotonic() + within
    state = (0, 0, 0)
    while time.monotonic() < deadline:
        for worker in workers:
            if worker.process.returncode is not None:
                raise AssertionError(f"worker exited {worker.process.returncode}:\n{worker.log()}")
        with contextlib.suppress(aio_pika.exceptions.AMQPError, OSError, ConnectionError):
            state = await queue_state(settings)
            if state[1] >= count:
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the queue has {state[1]} consumers, not {count}, after {within} s")


PROCESSED = "SELECT count(*) FROM deliveries WHERE delivery_id = ANY($1::uuid[])"


async def wait_processed(settings: Settings, delivery_ids: list[str], within: float = 90) -> None:
    """Until the running workers have an outcome row for every id and the queue is empty.

    This is the recovery a fault test waits for: it fails when the workers that lived through
    the fault stopped consuming (a missing consumer after a broker restart, a stuck retry).
    """
    ids = [UUID(i) for i in delivery_ids]
    deadline = time.monotonic() + within
    done, state = 0, (-1, 0, 0)
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn = await asyncpg.connect(settings.database_url, timeout=5)
            try:
                done = await conn.fetchval(PROCESSED, ids)
            finally:
                await conn.close()
        with contextlib.suppress(aio_pika.exceptions.AMQPError, OSError, ConnectionError):
            state = await queue_state(settings)
        if done == len(ids) and state[0] == 0:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(
        f"workers did not catch up within {within} s: {done} of {len(ids)} deliveries stored, "
        f"queue ready/consumers/dead = {state}"
    )
