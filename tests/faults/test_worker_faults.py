"""Worker faults under load through the real ingress: SIGKILL around COMMIT, a backend killed
mid-transaction, the same webhook twice to two workers (I2-I4, I6)."""

from __future__ import annotations

import asyncio
import signal
from urllib.parse import urlsplit

import asyncpg
import pytest

from shared.eventstore import APPEND_LOCK_KEY
from shared.faults import WORKER_AFTER_COMMIT, WORKER_BEFORE_COMMIT
from shared.settings import Settings
from tests.helpers.checker import Verify
from tests.helpers.driver import Driver, acknowledged_ids
from tests.helpers.ingress import running_ingress
from tests.helpers.outages import via, wait_consumers, wait_processed, worker_process
from tests.helpers.tcpproxy import tcp_proxy
from tests.helpers.webhooks import generate

KILLS = 2


@pytest.mark.parametrize("point", [WORKER_BEFORE_COMMIT, WORKER_AFTER_COMMIT])
async def test_worker_killed_around_commit_under_load(
    settings: Settings, db: asyncpg.Connection, verify: Verify, point: str
) -> None:
    """Each worker dies at its first COMMIT; the next one takes over. Redelivered batches are
    stored once (before: rolled back; after: committed, unacked, skipped when redelivered)."""
    async with running_ingress(settings) as url:
        driver = Driver(url, generate(400), rate=200)
        load = asyncio.create_task(driver.run())
        await driver.wait_acknowledged(40)
        for _ in range(KILLS):
            async with worker_process(settings, fault_point=point) as doomed:
                code = await asyncio.wait_for(doomed.process.wait(), 60)
                assert code == -signal.SIGKILL, doomed.log()
                assert "fault_point_reached" in doomed.log()
        async with worker_process(settings) as survivor:
            await load
            await wait_processed(settings, acknowledged_ids(driver))
            assert await survivor.stop() == 0, survivor.log()
    await verify(driver, faults=KILLS)
    if point == WORKER_AFTER_COMMIT:
        # The batch committed by each dying worker came back and was skipped, not doubled.
        assert await db.fetchval("SELECT count(*) FROM deliveries") == len(driver.sent)


TERMINATE_IN_TRANSACTION = """
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
FROM pg_stat_activity
WHERE datname = current_database()
  AND pid <> pg_backend_pid()
  AND backend_type = 'client backend'
  AND xact_start IS NOT NULL
"""


async def test_backend_terminated_mid_transaction_pauses_nothing_dead_lettered(
    settings: Settings, db: asyncpg.Connection, verify: Verify
) -> None:
    """`pg_terminate_backend` on the worker's connection inside its batch transaction."""
    terminated = 0
    async with running_ingress(settings) as url, worker_process(settings) as worker:
        await wait_consumers(settings, 1, 30, worker)
        driver = Driver(url, generate(600), rate=200)
        load = asyncio.create_task(driver.run())
        while not load.done() and terminated < 5:
            hit = await db.fetchval(TERMINATE_IN_TRANSACTION)
            terminated += hit
            await asyncio.sleep(0.3 if hit else 0.002)
        await load
        await wait_processed(settings, acknowledged_ids(driver))
        assert await worker.stop() == 0, worker.log()
        assert terminated > 0, "never caught the worker inside a transaction"
        assert "database_unavailable" in worker.log()
    await verify(driver, faults=terminated)


async def test_same_webhooks_twice_through_two_workers_are_one_event_each(
    settings: Settings, db: asyncpg.Connection, verify: Verify
) -> None:
    """Every webhook sent twice (two deliveries), two workers with prefetch > 1 and two batches
    in flight each: both copies may be in flight at once, in different transactions."""
    webhooks = generate(300)
    interleaved = [w for pair in zip(webhooks, webhooks, strict=True) for w in pair]
    small = settings.replace(prefetch=50, batch_size=20)
    async with (
        running_ingress(settings) as url,
        worker_process(small, concurrency=2) as first,
        worker_process(small, concurrency=2) as second,
    ):
        await wait_consumers(settings, 2, 30, first, second)
        driver = Driver(url, interleaved, concurrency=16)
        await driver.run()
        await wait_processed(settings, acknowledged_ids(driver))
        assert await first.stop() == 0, first.log()
        assert await second.stop() == 0, second.log()
    summary = await verify(driver)
    assert summary.acknowledged == len(webhooks)
    outcomes = dict(await db.fetch("SELECT outcome, count(*) FROM deliveries GROUP BY outcome"))
    assert outcomes == {"recorded": len(webhooks), "duplicate": len(webhooks)}


WAITING_FOR_APPEND_LOCK = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'
"""


async def test_connection_lost_between_commit_and_ack_does_not_stop_the_worker(
    settings: Settings, db: asyncpg.Connection, verify: Verify
) -> None:
    """The broker link dies while a batch is in its transaction: the COMMIT succeeds, the ack
    cannot be sent. The same worker reconnects, skips the redelivered batch as already stored,
    and goes on consuming (the batch loop used to die on that ack, leaving a live consumer
    whose messages nothing processed)."""
    async with running_ingress(settings) as url:
        driver = Driver(url, generate(300))
        await driver.run()
    target = urlsplit(settings.amqp_url)
    async with tcp_proxy(target.hostname or "127.0.0.1", target.port or 5672) as proxy:
        proxied = settings.replace(amqp_url=via(settings.amqp_url, proxy.port), batch_size=50)
        lock = db.transaction()
        await lock.start()
        locked = True
        try:
            await db.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK_KEY)
            async with worker_process(proxied) as worker:
                await wait_consumers(settings, 1, 30, worker)
                for _ in range(600):
                    if await db.fetchval(WAITING_FOR_APPEND_LOCK):
                        break
                    await asyncio.sleep(0.05)
                proxy.cut()
                proxy.restore()
                await lock.commit()
                locked = False
                await wait_processed(settings, acknowledged_ids(driver), within=60)
                assert "ack_not_sent" in worker.log()
                assert await worker.stop() == 0, worker.log()
        finally:
            if locked:
                await lock.rollback()
    await verify(driver)
