"""The spool through real outages of the machine's RabbitMQ (`make chaos`): the broker's app
stopped under a steady stream, the ingress SIGKILLed while the broker is down and restarted
before it is back, a memory alarm. Every webhook is answered 200 and stored exactly once.

Each test takes the fault lock and restores the broker in its teardown (`service_fault`). The
ingress and the worker are real subprocesses that live through the fault.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.helpers.checker import Verify
from tests.helpers.driver import Driver, RetryPolicy, acknowledged_ids
from tests.helpers.ingress import ingress_process
from tests.helpers.outages import (
    broker_start_app,
    broker_stop_app,
    memory_alarm,
    service_fault,
    wait_consumers,
    wait_processed,
    worker_process,
)
from tests.helpers.spool import metric, spooled_files, until_spool_empty
from tests.helpers.webhooks import generate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PUBLISH_TIMEOUT = 2.0
PATIENT = RetryPolicy(retries=20, backoff=0.25, max_backoff=2.0)


async def _steady_stream_through(
    settings: Settings,
    tmp_path: Path,
    count: int,
    start_fault: Callable[[], Awaitable[None]],
    end_fault: Callable[[], Awaitable[None]],
) -> tuple[Driver, float, float]:
    """`count` webhooks at 100/s through a spooling ingress and a worker; the fault starts once
    150 are answered and ends 300 answers later (answered from the spool). Returns the driver,
    the spool's records during the fault, and how many webhooks were spooled in all."""
    spooling = settings.replace(publish_timeout=PUBLISH_TIMEOUT, spool_dir=tmp_path)
    async with (
        service_fault(),
        ingress_process(spooling) as ingress,
        worker_process(settings) as worker,
    ):
        await wait_consumers(settings, 1, 30, worker)
        driver = Driver(ingress.base_url, generate(count), rate=100, policy=RetryPolicy(retries=0))
        load = asyncio.create_task(driver.run())
        await driver.wait_acknowledged(150)
        await start_fault()
        try:
            await driver.wait_acknowledged(driver.acknowledged + 300)
            during = await metric(ingress.base_url, "deskledger_ingress_spool_records")
        finally:
            await end_fault()
        await load
        await until_spool_empty(ingress.base_url, within=120)
        spooled = await metric(ingress.base_url, "deskledger_ingress_spool_appended_total")
        await wait_consumers(settings, 1, 60, worker)
        await wait_processed(settings, acknowledged_ids(driver), within=120)
        assert await worker.stop() == 0, worker.log()
    return driver, during, spooled


async def test_broker_stopped_under_a_steady_stream_every_webhook_is_200_and_stored_once(
    settings: Settings, tmp_path: Path, verify: Verify
) -> None:
    driver, during, spooled = await _steady_stream_through(
        settings, tmp_path, 1500, broker_stop_app, broker_start_app
    )
    await verify(driver, spooled=int(spooled))
    assert driver.statuses() == {200: 1500}, "a webhook was not answered 200"
    assert during > 0
    assert spooled >= 300


async def test_ingress_killed_while_spooling_broker_down_nothing_lost_nothing_doubled(
    settings: Settings, tmp_path: Path, verify: Verify
) -> None:
    """Broker stopped; the ingress spools and is SIGKILLed mid-stream; a new ingress starts
    while the broker is still down (it takes the slot over and spools on); the broker is
    started; everything is forwarded, stored once."""
    spooling = settings.replace(publish_timeout=PUBLISH_TIMEOUT, spool_dir=tmp_path)
    current: dict[str, str] = {}
    driver = Driver(lambda: current["url"], generate(800), rate=100, policy=PATIENT)
    async with service_fault(), worker_process(settings) as worker:
        await wait_consumers(settings, 1, 30, worker)
        async with ingress_process(spooling) as first:
            current["url"] = first.base_url
            load = asyncio.create_task(driver.run())
            await driver.wait_acknowledged(100)
            await broker_stop_app()
            try:
                await driver.wait_acknowledged(driver.acknowledged + 150)
                first.process.kill()
                await first.wait()
                assert spooled_files(tmp_path), "nothing was spooled before the kill"
                async with ingress_process(spooling) as second:
                    current["url"] = second.base_url
                    await driver.wait_acknowledged(driver.acknowledged + 150)
                    await broker_start_app()
                    await load
                    await until_spool_empty(second.base_url, within=120)
                    assert "spool_slot_recovered" in second.log()
            finally:
                await broker_start_app()
        await wait_consumers(settings, 1, 60, worker)
        await wait_processed(settings, acknowledged_ids(driver), within=120)
        assert await worker.stop() == 0, worker.log()
    summary = await verify(driver, faults=2)
    assert summary.acknowledged == 800
    assert spooled_files(tmp_path) == []


async def test_memory_alarm_webhooks_are_spooled_200_and_forwarded_after(
    settings: Settings, tmp_path: Path, verify: Verify
) -> None:
    """Publishers blocked: the first webhooks wait for the deadline and are spooled, the rest go
    to the spool at once; after the alarm everything is forwarded and stored once."""
    driver, during, spooled = await _steady_stream_through(
        settings,
        tmp_path,
        1200,
        lambda: memory_alarm(on=True),
        lambda: memory_alarm(on=False),
    )
    await verify(driver, spooled=int(spooled))
    assert driver.statuses() == {200: 1200}, "a webhook was not answered 200"
    assert during > 0
    slowest = max(a.finished - a.started for a in driver.attempts())
    assert slowest < PUBLISH_TIMEOUT + 2, f"a webhook took {slowest:.1f} s"
