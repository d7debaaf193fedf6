"""Issue 19 under load, on the real ingress process: a multipart header bomb, and 1,100 clients
dribbling their bodies, while normal webhooks flow and every one of them must get 200."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import pytest

from services.ingress.app import WEBHOOK_PATH
from shared.settings import Settings
from tests.helpers.checker import Verify
from tests.helpers.driver import Driver, RetryPolicy
from tests.helpers.ingress import ingress_process
from tests.helpers.webhooks import generate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

BOMBS = 6
SLOW_CLIENTS = 1100
READ_TIMEOUT = 15.0
DRIBBLE_EVERY = 2.0  # seconds between two bytes of a slow body


def _bomb(number: int) -> bytes:
    """~1 MB of `Content-Disposition` parameters: 19-24 s of the `email` parser before the fix."""
    params = "; a=b" * ((1024 * 1024 - 4096) // 5)
    secret = "wrong-secret" if number % 2 else "a-secret-of-nobody"
    return (
        f'--XyZ\r\nContent-Disposition: form-data; name="secret"{params}\r\n\r\n{secret}\r\n'
        "--XyZ--\r\n"
    ).encode()


async def _slowest_health_answer(url: str, stop: asyncio.Event) -> float:
    """The longest /healthz took while `stop` is unset: how long the loop was held."""
    slowest = 0.0
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            started = time.monotonic()
            async with http.get(url + "/healthz") as response:
                assert response.status == 200
            slowest = max(slowest, time.monotonic() - started)
            await asyncio.sleep(0.05)
    return slowest


async def test_multipart_header_bombs_are_400_and_the_loop_keeps_serving(
    settings: Settings, verify: Verify
) -> None:
    async with ingress_process(settings) as ingress, aiohttp.ClientSession() as http:
        url = ingress.base_url
        driver = Driver(url, generate(400), rate=100, policy=RetryPolicy(retries=0))
        load = asyncio.create_task(driver.run())
        await driver.wait_acknowledged(40)
        stop = asyncio.Event()
        health = asyncio.create_task(_slowest_health_answer(url, stop))
        answers = []
        for number in range(BOMBS):
            async with http.post(
                url + WEBHOOK_PATH,
                data=_bomb(number),
                headers={"Content-Type": "multipart/form-data; boundary=XyZ"},
            ) as response:
                answers.append((response.status, (await response.json())["error"]))
        stop.set()
        slowest = await health
        await load
    assert slowest < 1.5, f"/healthz waited {slowest:.2f} s: the event loop was held"
    summary = await verify(driver, faults=BOMBS, bad_inputs=BOMBS)
    assert summary.statuses == {"200": len(driver.sent)}, "a normal webhook was not served"
    assert answers == [(400, "bad_body")] * BOMBS


async def _slow_body(url: str, until: float) -> int:
    """A whole head, then one body byte every DRIBBLE_EVERY s; the status it is answered with
    (0: none before `until`, or the connection was refused or reset)."""
    host, port = url.removeprefix("http://").split(":")
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return 0
    answer = asyncio.create_task(reader.readline())
    try:
        writer.write(
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n{".encode()
        )
        while time.monotonic() < until:
            await asyncio.wait({answer}, timeout=DRIBBLE_EVERY)
            if answer.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(b" ")
                await writer.drain()
        if not answer.done():
            return 0
        status_line = answer.result()
        return int(status_line.split()[1]) if status_line else 0
    except (ConnectionError, IndexError, ValueError):
        return 0
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_flood_of_slow_bodies_does_not_lock_webhooks_out(
    settings: Settings, verify: Verify
) -> None:
    """1,100 bodies that never finish: before the fix they held DESKLEDGER_MAX_IN_FLIGHT (1024)
    and every real webhook got 503 until the read deadline; now they compete only for
    DESKLEDGER_MAX_BODY_READERS (256) places, oldest cut first, and webhooks get 200."""
    async with ingress_process(settings.replace(read_timeout=READ_TIMEOUT)) as ingress:
        url = ingress.base_url
        driver = Driver(url, generate(1500), rate=100, policy=RetryPolicy(retries=0))
        load = asyncio.create_task(driver.run())
        await driver.wait_acknowledged(50)
        until = time.monotonic() + READ_TIMEOUT + 10
        flood = asyncio.gather(*(_slow_body(url, until) for _ in range(SLOW_CLIENTS)))
        statuses = await flood
        await load
    summary = await verify(driver, faults=1, bad_inputs=SLOW_CLIENTS)
    assert summary.statuses == {"200": len(driver.sent)}, "a normal webhook was not served"
    assert set(statuses) <= {408, 0}, f"slow bodies answered {sorted(set(statuses))}"
    assert statuses.count(408) >= SLOW_CLIENTS - 50, "slow bodies were not cut off"
