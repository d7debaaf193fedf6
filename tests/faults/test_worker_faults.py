"""Worker faults under load through the real ingress: SIGKILL around COMMIT, a backend killed
mid-transaction, the same webhook twice to two workers (I2-I4, I6)."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import pytest

from shared.settings import Settings
from tests.faults.conftest import Verify
from tests.faults.driver import Driver, acknowledged_ids
from tests.faults.services import wait_consumers, wait_processed, worker_process
from tests.faults.webhooks import generate
from tests.helpers.ingress import running_ingress

KILLS = 2


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
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
    if point == "after_commit":
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
