"""`deskledger dlq` (issue 17): dead letters listed, shown with why, requeued after a fix."""

from __future__ import annotations

import asyncio

import aio_pika
import asyncpg
import pytest

from services.dlq import DeadLetterNotFound, listing, requeue, show
from shared.broker import TopologyNames
from shared.settings import Settings
from tests.helpers.deliveries import story_bodies
from tests.helpers.worker import drain, publish, queue_depths


async def _kill_all(settings: Settings, count: int) -> None:
    """Return every message to the queue until the delivery limit dead-letters it."""
    queue_name = TopologyNames.for_prefix(settings.amqp_prefix).queue
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        for _ in range(200):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                if (await queue_depths(settings))[1] == count:
                    return
                await asyncio.sleep(0.05)
                continue
            await message.nack(requeue=True)
    raise AssertionError("the messages were never dead-lettered")


async def test_dead_letters_are_listed_shown_and_requeued(
    settings: Settings, db: asyncpg.Connection
) -> None:
    limited = settings.replace(delivery_limit=1)
    bodies = story_bodies()[:2]
    first, second = await publish(limited, bodies)
    await _kill_all(limited, 2)

    lines = await listing(limited, 10)
    assert len(lines) == 2
    assert str(first) in lines[0] or str(first) in lines[1]
    assert "delivery_limit" in lines[0]
    assert await queue_depths(limited) == (0, 2)  # reading changed nothing

    shown = await show(limited, str(second))
    assert shown["reason"] == "delivery_limit"
    assert shown["queue"] == TopologyNames.for_prefix(settings.amqp_prefix).queue
    assert shown["body"] == bodies[1][1].decode()
    with pytest.raises(DeadLetterNotFound):
        await show(limited, "00000000-0000-0000-0000-000000000000")

    assert await requeue(limited, str(first)) == 1
    assert await queue_depths(limited) == (1, 1)
    assert await requeue(limited, None) == 1
    assert await queue_depths(limited) == (2, 0)

    await drain(limited)
    rows = await db.fetch("SELECT delivery_id, outcome FROM deliveries")
    assert {(row["delivery_id"], row["outcome"]) for row in rows} == {
        (first, "recorded"),
        (second, "recorded"),
    }
