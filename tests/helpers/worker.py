"""Running the worker in tests, and publishing to its queue the way the ingress does."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime

import aio_pika

from services.worker.consumer import Worker
from shared.broker import H_BODY_SHA256, H_CONTENT_TYPE, H_KIND, H_RECEIVED_AT, declare_topology
from shared.settings import Settings
from shared.usedesk import Kind


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
            message = aio_pika.Message(
                body,
                message_id=str(delivery_id),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type="application/json",
                headers={
                    H_KIND: kind,
                    H_CONTENT_TYPE: "application/json",
                    H_RECEIVED_AT: datetime.now(UTC).isoformat(),
                    H_BODY_SHA256: hashlib.sha256(body).hexdigest(),
                },
            )
            await topology.exchange.publish(message, "webhook", mandatory=True, timeout=10)
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
