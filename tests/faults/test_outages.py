"""Service outages mid-load on the machine's real RabbitMQ and PostgreSQL (`make chaos`).

Each test takes the fault lock and restores both services in its teardown, whatever happened
(`service_fault`). The ingress and the worker are real subprocesses that live through the
fault: the recovery the checker waits for is theirs, not a fresh process's, so a consumer that
never came back after a broker restart fails the test.

The broker faults here run the ingress without a spool (503 is its answer); with the spool they
are answered 200 (test_spool_outages.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from shared.settings import Settings
from tests.helpers.checker import Verify
from tests.helpers.driver import Driver, RetryPolicy, acknowledged_ids
from tests.helpers.ingress import IngressProcess, ingress_process
from tests.helpers.outages import (
    broker_kill,
    broker_start,
    broker_start_app,
    broker_stop_app,
    memory_alarm,
    postgres_start,
    postgres_stop,
    service_fault,
    wait_consumers,
    wait_processed,
    worker_process,
)
from tests.helpers.webhooks import generate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PUBLISH_TIMEOUT = 2.0
# Long enough to ride out a broker restart, as a sender with its own queue would.
OUTAGE = RetryPolicy(retries=20, backoff=0.25, max_backoff=2.0)


async def _readiness(ingress: IngressProcess) -> int | None:
    with contextlib.suppress(aiohttp.ClientError):
        async with aiohttp.ClientSession() as http, http.get(ingress.base_url + "/readyz") as r:
            return r.status
    return None


async def _until_readiness(ingress: IngressProcess, wanted: int) -> None:
    for _ in range(300):
        if await _readiness(ingress) == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz never answered {wanted}:\n{ingress.log()}")


async def _broker_outage(
    settings: Settings,
    verify: Verify,
    stop: Callable[[], Awaitable[None]],
    start: Callable[[], Awaitable[None]],
) -> None:
    quick = settings.replace(publish_timeout=PUBLISH_TIMEOUT, spool_dir=None)
    async with (
        service_fault(),
        ingress_process(quick) as ingress,
        worker_process(settings) as worker,
    ):
        await wait_consumers(settings, 1, 30, worker)
        driver = Driver(ingress.base_url, generate(1500), rate=100, policy=OUTAGE)
        load = asyncio.create_task(driver.run())
        await driver.wait_acknowledged(150)
        loop = asyncio.get_running_loop()
        stopped = loop.time()
        await stop()
        await _until_readiness(ingress, 503)
        await driver.wait_refusals(20)
        starting = loop.time()
        await start()
        await _until_readiness(ingress, 200)
        await load
        await wait_consumers(settings, 1, 60, worker)
        await wait_processed(settings, acknowledged_ids(driver), within=120)
        assert await worker.stop() == 0, worker.log()
    await verify(driver)
    down = [a for a in driver.attempts() if a.started > stopped and a.finished < starting]
    assert down, "no webhook was answered while the broker was down"
    assert {a.status for a in down} <= {503, 200}  # 200: confirmed just before the stop
    slowest = max(a.finished - a.started for a in down if a.status == 503)
    assert slowest < PUBLISH_TIMEOUT + 2, f"a 503 took {slowest:.1f} s: past the deadline"


async def test_broker_app_stopped_mid_load(settings: Settings, verify: Verify) -> None:
    await _broker_outage(settings, verify, broker_stop_app, broker_start_app)


async def test_broker_killed_mid_load(settings: Settings, verify: Verify) -> None:
    """SIGKILL of the Erlang VM: every confirmed message must have been on disk."""
    await _broker_outage(settings, verify, broker_kill, broker_start)


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_broker_memory_alarm_is_503_at_the_deadline_with_bounded_memory(
    settings: Settings, verify: Verify
) -> None:
    """A memory alarm blocks every publisher: each webhook waits at most the publish deadline,
    at most `max_in_flight` wait at once, the rest are refused at once; memory stays flat."""
    capped = settings.replace(publish_timeout=PUBLISH_TIMEOUT, max_in_flight=64, spool_dir=None)
    async with (
        service_fault(),
        ingress_process(capped) as ingress,
        worker_process(settings) as worker,
    ):
        await wait_consumers(settings, 1, 30, worker)
        driver = Driver(ingress.base_url, generate(1500), rate=100, policy=OUTAGE)
        load = asyncio.create_task(driver.run())
        await driver.wait_acknowledged(150)
        before = _rss_bytes(ingress.process.pid)
        flood = Driver(ingress.base_url, generate(3000, start=1500), concurrency=400)
        flood.policy = RetryPolicy(retries=0)
        await memory_alarm(on=True)
        try:
            await driver.wait_refusals(5)  # publishing is blocked from here on
            await flood.run()
            peak = _rss_bytes(ingress.process.pid)
        finally:
            await memory_alarm(on=False)
        await load
        await wait_processed(settings, acknowledged_ids(driver), within=120)
        assert await worker.stop() == 0, worker.log()
    # The flood's webhooks count too: none may be lost, none may appear twice.
    await verify(driver, faults=1, extra=flood.sent)
    assert {a.status for a in flood.attempts()} == {503}, "a 200 while publishing was blocked"
    # Refused at the handler's cap ("overloaded") or at the publisher's cap on unconfirmed
    # publishes ("broker_unavailable"): which one fills first depends on timing (the batched
    # publisher reaches its cap before 64 requests are in the handler).
    assert {a.error for a in flood.attempts()} <= {"broker_unavailable", "overloaded"}
    slowest = max(a.finished - a.started for a in flood.attempts())
    assert slowest < PUBLISH_TIMEOUT + 2, f"a 503 took {slowest:.1f} s: past the deadline"
    assert peak - before < 64 * 1024 * 1024, f"the ingress grew by {(peak - before) >> 20} MiB"


async def test_postgres_stopped_mid_stream_pauses_the_worker_nothing_dead_lettered(
    settings: Settings, verify: Verify
) -> None:
    """`pg_ctlcluster stop -m immediate` (a crash), then start: the worker pauses and retries,
    the ingress keeps answering 200, the backlog drains into the store afterwards."""
    async with (
        service_fault(),
        ingress_process(settings) as ingress,
        worker_process(settings) as worker,
    ):
        await wait_consumers(settings, 1, 30, worker)
        driver = Driver(ingress.base_url, generate(1200), rate=150)
        load = asyncio.create_task(driver.run())
        await driver.wait_acknowledged(150)
        await postgres_stop()
        try:
            acknowledged = driver.acknowledged
            await driver.wait_acknowledged(acknowledged + 300)  # the backlog grows meanwhile
        finally:
            await postgres_start()
        await load
        await wait_processed(settings, acknowledged_ids(driver), within=120)
        assert await worker.stop() == 0, worker.log()
        assert "database_unavailable" in worker.log()
    summary = await verify(driver)
    assert summary.statuses == {"200": len(driver.sent)}, "the ingress depends on PostgreSQL"
