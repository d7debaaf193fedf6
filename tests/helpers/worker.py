"""Running the worker in tests, and publishing to its queue the way the ingress does."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika

from services.worker.consumer import Worker
from shared import envelope
from shared.broker import declare_topology
from shared.settings import Settings
from shared.usedesk import Kind
from shared.usedesk.media import JSON


async def publish(
    settings: Settings,
    bodies: list[tuple[Kind, bytes]],
    delivery_ids: list[uuid.UUID] | None = None,
) -> list[uuid.UUID]:
    """Publish persistent, confirmed messages shaped like the ingress's; returns their ids."""
    ids = delivery_ids or [uuid.uuid4() for _ in bodies]
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = await declare_topology(channel, settings.amqp_prefix, settings.delivery_limit)
        for delivery_id, (kind, body) in zip(ids, bodies, strict=True):
            delivery = envelope.accepted(kind, JSON, body, body, delivery_id=delivery_id)
            await topology.exchange.publish(
                envelope.message(delivery), "webhook", mandatory=True, timeout=10
            )
    return ids


async def drain(settings: Settings, concurrency: int = 1) -> None:
    """Run a worker until the queue is empty (burst mode)."""
    await asyncio.wait_for(Worker(settings, concurrency, burst=True).run(), 600)


async def queue_depths(settings: Settings) -> tuple[int, int]:
    """(ready messages in the queue, in the dead-letter queue)."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        topology = await declare_topology(channel, settings.amqp_prefix, settings.delivery_limit)
        main = await channel.declare_queue(topology.names.queue, passive=True)
        dead = await channel.declare_queue(topology.names.dead_letter_queue, passive=True)
        return (
            main.declaration_result.message_count or 0,
            dead.declaration_result.message_count or 0,
        )
