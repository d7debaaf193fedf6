"""The ingress's batched publish on the real broker: many publishes of one loop iteration go out
in one write and each is confirmed on its own; a returned (unroutable) one fails, also in the
middle of a batch, and its neighbours are still confirmed (I1: a 200 only once confirmed)."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest

from services.ingress.publisher import Publisher, PublishFailed
from shared import envelope
from shared.broker import ROUTING_KEY, TopologyNames
from shared.settings import Settings
from tests.helpers.ingress import published

pytestmark = pytest.mark.timeout(60)


def delivery(n: int, size: int = 100) -> envelope.Delivery:
    body = b'{"ping":%d,"pad":"%s"}' % (n, b"x" * size)
    return envelope.accepted("ping", "application/json", body, body, delivery_id=uuid.uuid4())


async def test_a_batch_is_confirmed_message_by_message_and_read_back_unchanged(
    settings: Settings,
) -> None:
    publisher = await Publisher.open(settings)
    try:
        # One large body: split into several content frames inside the same write.
        deliveries = [delivery(n) for n in range(50)] + [delivery(50, size=300_000)]
        # Both ways in: aiormq's properties marshalled by pamqp, or written directly.
        await asyncio.gather(
            *(
                publisher.publish(d.body, envelope.properties(d))
                if n % 2
                else publisher.publish_delivery(d)
                for n, d in enumerate(deliveries)
            )
        )
    finally:
        await publisher.close()
    messages = await published(settings, len(deliveries))
    read = [envelope.from_message(m) for m in messages]
    assert read == deliveries
    assert all(m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT for m in messages)


async def test_returned_publishes_fail_and_their_batch_neighbours_are_confirmed(
    settings: Settings,
) -> None:
    publisher = await Publisher.open(settings)
    names = TopologyNames.for_prefix(settings.amqp_prefix)
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(names.queue, passive=True)
            await queue.unbind(names.exchange, ROUTING_KEY)
            unroutable = [delivery(n) for n in range(10)]
            results = await asyncio.gather(
                *(publisher.publish(d.body, envelope.properties(d)) for d in unroutable),
                return_exceptions=True,
            )
            assert all(isinstance(r, PublishFailed) for r in results), results
            await queue.bind(names.exchange, ROUTING_KEY)
            routable = [delivery(n) for n in range(10, 20)]
            await asyncio.gather(
                *(publisher.publish(d.body, envelope.properties(d)) for d in routable)
            )
    finally:
        await publisher.close()
    messages = await published(settings, 20, within=3)
    assert [envelope.from_message(m) for m in messages] == routable
