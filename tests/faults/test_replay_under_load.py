"""`deskledger replay` (rebuild and swap) while webhooks flow through ingress and worker."""

from __future__ import annotations

import asyncio

from services.replay.rebuild import Rebuild, RebuildOptions
from shared.projections import ALL
from shared.settings import Settings
from tests.helpers.checker import Verify
from tests.helpers.driver import Driver, acknowledged_ids
from tests.helpers.ingress import running_ingress
from tests.helpers.outages import wait_consumers, wait_processed, worker_process
from tests.helpers.webhooks import generate

REPLAYS = 3


async def test_replays_while_the_worker_writes_lose_and_double_nothing(
    settings: Settings, verify: Verify
) -> None:
    """Each replay swaps fresh tables in under the append lock while the worker appends and
    folds into them: no event is lost or applied twice, live equals replay afterwards."""
    async with running_ingress(settings) as url, worker_process(settings) as worker:
        await wait_consumers(settings, 1, 30, worker)
        driver = Driver(url, generate(1200), rate=200)
        load = asyncio.create_task(driver.run())
        swapped = 0
        for _ in range(REPLAYS):
            await driver.wait_acknowledged(driver.acknowledged + 150)
            report = await Rebuild(settings.database_url, RebuildOptions(ALL)).run()
            swapped += report.swapped
        await load
        await wait_processed(settings, acknowledged_ids(driver))
        assert await worker.stop() == 0, worker.log()
    assert swapped == REPLAYS
    await verify(driver, faults=REPLAYS)
