"""Deployment states that must not look like faults (issue 17): a changed delivery limit, a
worker ahead of the schema. Both against the real broker and database."""

from __future__ import annotations

import asyncio

import aio_pika
import asyncpg
import pytest
from aiormq.exceptions import ChannelPreconditionFailed
from structlog.testing import capture_logs

from services.worker.consumer import Worker
from shared.broker import TopologyNames, declare_topology
from shared.settings import Settings
from tests.helpers.deliveries import story_bodies
from tests.helpers.worker import drain, publish, queue_depths


async def test_a_changed_delivery_limit_is_one_warning_not_a_crash_loop(
    settings: Settings, db: asyncpg.Connection
) -> None:
    await publish(settings, story_bodies())  # declares the queue with the limit of 20
    raised = settings.replace(delivery_limit=settings.delivery_limit + 10)
    with capture_logs() as logs:
        await drain(raised)
        # The ingress side: a confirming channel on a robust connection publishes as before.
        connection = await aio_pika.connect_robust(settings.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            for _ in range(2):  # a reopened channel declares again: still no second warning
                topology = await declare_topology(channel, raised.amqp_prefix, 30)
            await topology.exchange.publish(
                aio_pika.Message(b"{}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                "webhook",
                mandatory=True,
                timeout=10,
            )
    warnings = [entry for entry in logs if entry["event"] == "queue_arguments_differ"]
    # Three declarations, one warning (the others are debug lines, which another test's
    # logging configuration may filter out).
    assert [entry["log_level"] for entry in warnings if entry["log_level"] != "debug"] == [
        "warning"
    ]
    assert "x-delivery-limit" in warnings[0]["broker"]
    assert "set_policy" in warnings[0]["hint"]
    assert await db.fetchval("SELECT count(*) FROM events") == 4
    assert await queue_depths(settings) == (1, 0)


async def test_a_worker_ahead_of_the_schema_waits_for_migrate_and_dead_letters_nothing(
    settings: Settings, db: asyncpg.Connection
) -> None:
    # What a worker of the next release sees before `migrate`: a table it writes is missing.
    await db.execute("ALTER TABLE ticket_ratings RENAME TO ticket_ratings_not_yet")
    await publish(settings, story_bodies())
    worker = Worker(settings.replace(delivery_limit=2))
    with capture_logs() as logs:
        running = asyncio.create_task(worker.run())
        try:
            for _ in range(100):
                if any(entry["event"] == "database_schema_behind" for entry in logs):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # several retries: more than the delivery limit of 2
            assert not worker.ready()
            assert await db.fetchval("SELECT count(*) FROM deliveries") == 0
            await db.execute("ALTER TABLE ticket_ratings_not_yet RENAME TO ticket_ratings")
            for _ in range(300):
                if await db.fetchval("SELECT count(*) FROM events") == 4:
                    break
                await asyncio.sleep(0.1)
        finally:
            worker.stop()
            await asyncio.wait_for(running, 30)
    behind = [entry for entry in logs if entry["event"] == "database_schema_behind"]
    assert behind, [entry["event"] for entry in logs]
    assert "deskledger migrate" in behind[0]["hint"]
    assert not [entry for entry in logs if entry["event"] in ("batch_failed", "delivery_failed")]
    outcomes = await db.fetch("SELECT outcome, count(*) AS n FROM deliveries GROUP BY outcome")
    assert {row["outcome"]: row["n"] for row in outcomes} == {"recorded": 4}
    assert await queue_depths(settings) == (0, 0)


async def test_any_other_difference_in_the_queue_stays_an_error(settings: Settings) -> None:
    """A classic queue where the quorum queue belongs is no setting to carry on without (I1)."""
    names = TopologyNames.for_prefix(settings.amqp_prefix)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(names.queue, durable=True)  # classic
        with pytest.raises(ChannelPreconditionFailed, match="inequivalent arg"):
            await declare_topology(await connection.channel(), settings.amqp_prefix, 20)
