"""Faults between the ingress and RabbitMQ that need no service stopped: a one-way link failure
after publish and before the confirm, a binding and a queue deleted under load (I1).

These run the ingress without a spool (`DESKLEDGER_SPOOL_DIR=none`), whose answer is 503; with
one, the same faults are 200 from the spool (test_spool.py, integration/test_ingress_spool.py).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aio_pika
import asyncpg

from shared.broker import ROUTING_KEY, TopologyNames, declare_topology
from shared.settings import Settings
from tests.helpers.checker import Verify
from tests.helpers.driver import Driver, RetryPolicy, acknowledged_ids
from tests.helpers.ingress import running_ingress
from tests.helpers.outages import via, wait_consumers, wait_processed, worker_process
from tests.helpers.tcpproxy import tcp_proxy
from tests.helpers.webhooks import generate

PATIENT = RetryPolicy(retries=12, backoff=0.2, max_backoff=1.0)


async def test_confirms_lost_on_the_way_back_are_503_and_the_retry_is_one_event(
    settings: Settings, db: asyncpg.Connection, verify: Verify
) -> None:
    """The broker stores the message but its confirm never arrives: 503, then the sender's
    retry is a second delivery of the same fact, absorbed into one event."""
    target = urlsplit(settings.amqp_url)
    async with tcp_proxy(target.hostname or "127.0.0.1", target.port or 5672) as proxy:
        proxied = settings.replace(
            amqp_url=via(settings.amqp_url, proxy.port), publish_timeout=1, spool_dir=None
        )
        async with running_ingress(proxied) as url:
            driver = Driver(url, generate(400), rate=150, policy=PATIENT)
            load = asyncio.create_task(driver.run())
            await driver.wait_acknowledged(60)
            proxy.drop_replies()
            dropped = asyncio.get_running_loop().time()
            await driver.wait_refusals(8)
            proxy.cut()  # the ingress sees its connection die and reconnects
            cut = asyncio.get_running_loop().time()
            proxy.restore()
            await load
    summary = await verify(driver)
    blind = [a for a in driver.attempts() if a.started > dropped and a.finished < cut]
    assert blind, "no request was answered while the confirms were lost"
    assert all(a.status != 200 for a in blind), "200 without a confirm"
    duplicates = await db.fetchval("SELECT count(*) FROM deliveries WHERE outcome = 'duplicate'")
    assert duplicates > 0, "no unconfirmed publish was stored, so no retry was deduplicated"
    assert summary.deliveries == summary.stored + duplicates


async def test_unbound_queue_is_503_never_200_and_nothing_is_lost(
    settings: Settings, verify: Verify
) -> None:
    """Unroutable publishes are returned (mandatory): 503 while the binding is gone."""
    names = TopologyNames.for_prefix(settings.amqp_prefix)
    async with running_ingress(settings.replace(publish_timeout=1, spool_dir=None)) as url:
        driver = Driver(url, generate(300), rate=150, policy=PATIENT)
        load = asyncio.create_task(driver.run())
        await driver.wait_acknowledged(50)
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(names.queue, passive=True)
            await queue.unbind(names.exchange, ROUTING_KEY)
            unbound = asyncio.get_running_loop().time()
            await driver.wait_refusals(10)
            rebinding = asyncio.get_running_loop().time()
            await queue.bind(names.exchange, ROUTING_KEY)
        await load
    await verify(driver)
    window = [a for a in driver.attempts() if a.started > unbound and a.finished < rebinding]
    assert window, "no request was answered while the queue was unbound"
    assert {a.status for a in window} == {503}


async def test_deleted_queue_is_503_never_200_and_the_worker_resumes(
    settings: Settings, verify: Verify
) -> None:
    """The queue deleted mid-run, then declared again by an operator: 503 while it is gone,
    and the worker that lived through it consumes the new queue.

    A queue cannot be deleted without destroying what it holds, so the binding goes first and
    the worker empties the queue: what was acknowledged is stored before the queue goes.
    """
    names = TopologyNames.for_prefix(settings.amqp_prefix)
    async with (
        running_ingress(settings.replace(publish_timeout=1, spool_dir=None)) as url,
        worker_process(settings) as worker,
    ):
        await wait_consumers(settings, 1, 30, worker)
        driver = Driver(url, generate(300), rate=150, policy=PATIENT)
        load = asyncio.create_task(driver.run())
        await driver.wait_acknowledged(50)
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(names.queue, passive=True)
            await queue.unbind(names.exchange, ROUTING_KEY)
            await wait_processed(settings, acknowledged_ids(driver))
            await channel.queue_delete(names.queue)
            deleted = asyncio.get_running_loop().time()
            await driver.wait_refusals(10)
            declaring = asyncio.get_running_loop().time()
            await declare_topology(channel, settings.amqp_prefix, settings.delivery_limit)
        await load
        await wait_processed(settings, acknowledged_ids(driver))
        assert await worker.stop() == 0, worker.log()
    await verify(driver)
    window = [a for a in driver.attempts() if a.started > deleted and a.finished < declaring]
    assert window, "no request was answered while the queue was gone"
    assert {a.status for a in window} == {503}
