"""500 slow clients dribbling bytes at the real ingress while normal webhooks flow (I8)."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from services.ingress.app import WEBHOOK_PATH
from shared.settings import Settings
from tests.helpers.checker import Verify
from tests.helpers.driver import Driver, RetryPolicy
from tests.helpers.ingress import ingress_process
from tests.helpers.webhooks import generate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SLOW_CLIENTS = 500
READ_TIMEOUT = 3.0
DRIBBLE = [(0.5, b"{")] * 12  # 6 s for 12 bytes of a 1000-byte body: past the read deadline


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _dribbled_body(url: str) -> int:
    """A complete head, then a body one byte at a time; the status it is answered with."""
    reader, writer = await _open(url)
    answer = asyncio.create_task(reader.readline())
    try:
        writer.write(
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n".encode()
        )
        for delay, part in DRIBBLE:
            await asyncio.wait({answer}, timeout=delay)
            if answer.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(part)
                await writer.drain()
        status_line = await asyncio.wait_for(answer, 30)
        return int(status_line.split()[1]) if status_line else 0
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _dribbled_head(url: str) -> None:
    """A request head that never ends (slowloris), abandoned after the dribble."""
    _, writer = await _open(url)
    try:
        writer.write(f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: slow\r\nX-Slow: ".encode())
        for delay, part in DRIBBLE:
            await asyncio.sleep(delay)
            writer.write(part)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_slow_clients_are_bounded_and_others_still_get_200(
    settings: Settings, verify: Verify
) -> None:
    async with ingress_process(settings.replace(read_timeout=READ_TIMEOUT)) as ingress:
        url = ingress.base_url
        before = _rss_bytes(ingress.process.pid)
        driver = Driver(url, generate(600), rate=100, policy=RetryPolicy(retries=0))
        load = asyncio.create_task(driver.run())
        await driver.wait_acknowledged(50)
        half = SLOW_CLIENTS // 2
        bodies = asyncio.gather(*(_dribbled_body(url) for _ in range(half)))
        heads = asyncio.gather(*(_dribbled_head(url) for _ in range(SLOW_CLIENTS - half)))
        await asyncio.sleep(DRIBBLE[0][0] * len(DRIBBLE) / 2)
        peak = _rss_bytes(ingress.process.pid)
        statuses, _ = await asyncio.gather(bodies, heads)
        await load
    summary = await verify(driver, faults=1, bad_inputs=SLOW_CLIENTS)
    assert set(statuses) == {408}, f"dribbled bodies answered {sorted(set(statuses))}"
    assert summary.statuses == {"200": len(driver.sent)}, "a normal webhook was not served"
    assert peak - before < 64 * 1024 * 1024, f"the ingress grew by {(peak - before) >> 20} MiB"
