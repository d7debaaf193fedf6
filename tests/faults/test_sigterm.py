"""SIGTERM under load: readiness turns 503 first, what is in flight finishes, what a worker held
unacked goes back to the queue, and the checker passes."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time

import aiohttp
import asyncpg

from services.ingress.app import WEBHOOK_PATH
from shared.eventstore import APPEND_LOCK_KEY
from shared.settings import Settings
from tests.helpers.checker import Verify
from tests.helpers.driver import Attempt, Driver, Sent
from tests.helpers.ingress import ingress_process, running_ingress
from tests.helpers.outages import queue_state, wait_consumers, worker_process
from tests.helpers.services import free_port
from tests.helpers.webhooks import Webhook, generate

HELD = 3


async def _held(url: str, webhook: Webhook, release: asyncio.Event) -> Sent:
    """A webhook whose body stays half-sent (in flight) until `release`."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: test\r\nContent-Type: {webhook.content_type}"
            f"\r\nContent-Length: {len(webhook.body)}\r\nConnection: close\r\n\r\n".encode()
            + webhook.body[:10]
        )
        await writer.drain()
        await release.wait()
        writer.write(webhook.body[10:])
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    status = int(raw.split(b" ", 2)[1])
    found = re.search(rb'"delivery_id":"([0-9a-f-]{36})"', raw)
    delivery_id = found.group(1).decode() if found else None
    return Sent(webhook, [Attempt(started, time.monotonic(), status, delivery_id)])


async def _get_status(http: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with http.get(url) as response:
            return response.status
    except aiohttp.ClientError:
        return None


async def _until_status(http: aiohttp.ClientSession, url: str, wanted: int | None) -> None:
    for _ in range(100):
        if await _get_status(http, url) == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered {wanted}")


async def _until_refused(url: str) -> None:
    """Until the listener is closed: a new connection is refused (open ones may live on)."""
    host, port = url.removeprefix("http://").split(":")
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except ConnectionRefusedError:
            return
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} still accepts connections")


async def _in_flight(http: aiohttp.ClientSession, base_url: str) -> float:
    async with http.get(base_url + "/metrics") as response:
        found = re.search(r"^deskledger_ingress_in_flight (\S+)$", await response.text(), re.M)
    return float(found.group(1)) if found else 0.0


async def test_ingress_sigterm_drains_then_finishes_in_flight(
    settings: Settings, verify: Verify
) -> None:
    webhooks = generate(400)
    held_webhooks, sent_by_driver = webhooks[:HELD], webhooks[HELD:]
    release = asyncio.Event()
    async with (
        aiohttp.ClientSession() as http,
        running_ingress(settings) as other,
        ingress_process(settings.replace(drain_seconds=2.0)) as stopping,
    ):
        target = stopping.base_url
        driver = Driver(lambda: target, sent_by_driver, rate=150)
        load = asyncio.create_task(driver.run())
        await driver.wait_acknowledged(40)
        held = [asyncio.create_task(_held(target, w, release)) for w in held_webhooks]
        for _ in range(100):
            if await _in_flight(http, target) >= HELD:
                break
            await asyncio.sleep(0.05)
        stopping.send_signal(signal.SIGTERM)
        await _until_status(http, target + "/readyz", 503)
        # Draining: not ready, but still serving what the load balancer still sends.
        draining = time.monotonic()

        def while_draining() -> list[Attempt]:
            return [a for a in driver.attempts() if a.started > draining]

        await driver.wait_until(lambda: len(while_draining()) >= 10)
        assert {a.status for a in while_draining()} == {200}
        target = other  # the load balancer has taken the stopping ingress out
        await _until_status(http, target + "/readyz", 200)
        await _until_refused(stopping.base_url)
        release.set()
        held_sent = await asyncio.gather(*held)
        assert [s.attempts[0].status for s in held_sent] == [200] * HELD
        assert await stopping.wait(30) == 0, stopping.log()
        await load
    await verify(driver, extra=held_sent)


async def _until_ready_messages(settings: Settings, count: int) -> None:
    ready = -1
    for _ in range(200):
        ready = (await queue_state(settings))[0]
        if ready == count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{ready} messages ready in the queue, not {count}")


WAITING_FOR_APPEND_LOCK = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'
"""


async def test_worker_sigterm_finishes_its_batch_and_requeues_the_rest(
    settings: Settings, db: asyncpg.Connection, verify: Verify
) -> None:
    """The worker's batch is held mid-transaction on the append lock when SIGTERM comes: it
    turns unready, commits that batch once the lock is free, and hands back the rest."""
    port = free_port()
    worker_settings = settings.replace(prefetch=200, batch_size=50, worker_metrics_port=port)
    backlog = 400
    async with aiohttp.ClientSession() as http, running_ingress(settings) as url:
        driver = Driver(url, generate(backlog), rate=200)
        await driver.run()
    assert driver.acknowledged == backlog
    lock = db.transaction()
    await lock.start()
    locked = True
    try:
        await db.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK_KEY)
        async with aiohttp.ClientSession() as http, worker_process(worker_settings) as worker:
            await wait_consumers(settings, 1, 30, worker)
            for _ in range(600):
                if await db.fetchval(WAITING_FOR_APPEND_LOCK):
                    break
                await asyncio.sleep(0.05)
            ready = f"http://127.0.0.1:{port}/readyz"
            assert await _get_status(http, ready) == 200
            await _until_ready_messages(settings, backlog - 200)  # the prefetch is held
            worker.process.send_signal(signal.SIGTERM)
            await _until_status(http, ready, 503)
            assert worker.process.returncode is None
            await lock.commit()
            locked = False
            assert await worker.stop(30) == 0, worker.log()
            assert "batch_committed" in worker.log()
    finally:
        if locked:
            await lock.rollback()
    finished = await db.fetchval("SELECT count(*) FROM deliveries")
    assert 0 < finished <= 50, "the batch in hand was not finished"
    await _until_ready_messages(settings, backlog - finished)  # the unacked were requeued
    await verify(driver)
