"""Running the ingress in tests, and reading back what it published.

- `running_ingress(settings)`: the app in this event loop on 127.0.0.1, an ephemeral port;
  yields the base URL.
- `ingress_process(settings, processes=1)`: the real `deskledger ingress` subprocess
  (`python -m services ingress`), its environment built from `settings`; waits for /readyz and
  yields an `IngressProcess` (base URL, the process, its log). SIGTERM and wait on exit.
- `settings_environ(settings)`: the environment variables that load back into `settings`.
- `published(settings, count)`: the next `count` messages of the webhook queue, acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiohttp
from aio_pika.abc import AbstractIncomingMessage
from aiohttp import web

from services.ingress.app import WEBHOOK_PATH, create_app
from services.ingress.server import make_runner
from shared.broker import declare_topology
from shared.settings import Settings
from tests.helpers.services import deskledger, free_port


@contextlib.asynccontextmanager
async def running_ingress(settings: Settings) -> AsyncIterator[str]:
    """The ingress app served in-process; yields e.g. `http://127.0.0.1:41234`."""
    runner = make_runner(create_app(settings), settings)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class IngressProcess:
    base_url: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def webhook_url(self) -> str:
        return self.base_url + WEBHOOK_PATH

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def send_signal(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)

    async def wait(self, within: float = 60) -> int:
        return await asyncio.wait_for(self.process.wait(), within)


@contextlib.asynccontextmanager
async def ingress_process(
    settings: Settings, processes: int = 1, ready_within: float = 30
) -> AsyncIterator[IngressProcess]:
    """A real `deskledger ingress` on a free port of 127.0.0.1, ready when yielded."""
    port = free_port()
    listening = settings.replace(http_host="127.0.0.1", http_port=port)
    with tempfile.TemporaryDirectory(prefix="deskledger-ingress-") as tmp:
        log_path = Path(tmp) / "ingress.log"
        with log_path.open("wb") as log_file:
            process = await deskledger(
                listening,
                "ingress",
                "--processes",
                str(processes),
                stdout=log_file,
                stderr=log_file,
            )
        ingress = IngressProcess(f"http://127.0.0.1:{port}", process, log_path)
        try:
            await _until_ready(ingress, ready_within, processes)
            yield ingress
        finally:
            await _stop(process)


async def _until_ready(ingress: IngressProcess, within: float, processes: int = 1) -> None:
    """Until /readyz answers 200 and every process listens (a check reaches one of them: the
    others may still be importing)."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if ingress.process.returncode is not None:
                raise RuntimeError(f"ingress exited {ingress.process.returncode}:\n{ingress.log()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(ingress.base_url + "/readyz") as response:
                    if response.status == 200 and _listening(ingress) >= processes:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"ingress not ready within {within} s:\n{ingress.log()}")


def _listening(ingress: IngressProcess) -> int:
    return ingress.log().count('"ingress_listening"')


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 60)
        except TimeoutError:
            process.kill()
            await process.wait()


async def published(
    settings: Settings, count: int, within: float = 10
) -> list[AbstractIncomingMessage]:
    """The next `count` messages of the webhook queue (acknowledged); fewer if none come
    `within` seconds."""
    messages: list[AbstractIncomingMessage] = []
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        # Declaring with the ingress's arguments also proves the queue is the quorum queue.
        topology = await declare_topology(channel, settings.amqp_prefix, settings.delivery_limit)
        deadline = time.monotonic() + within
        while len(messages) < count and time.monotonic() < deadline:
            message = await topology.queue.get(fail=False, timeout=5)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            messages.append(message)
    return messages


async def post_webhook(
    http: aiohttp.ClientSession, base_url: str, body: bytes, content_type: str
) -> tuple[int, str]:
    """POST `body` to the webhook endpoint of the ingress at `base_url`: (status, answer)."""
    headers = {"Content-Type": content_type}
    async with http.post(base_url + WEBHOOK_PATH, data=body, headers=headers) as answer:
        return answer.status, await answer.text()
