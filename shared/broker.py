"""RabbitMQ topology, shared by the ingress (publisher) and the worker (the message itself:
`shared.envelope`).

One function declares everything so both sides always agree on the queue arguments (a
redeclare with different arguments is a channel error).

- `<prefix>.webhooks` direct exchange -> `<prefix>.webhooks` durable quorum queue with an
  explicit delivery limit; a message redelivered more often than that is dead-lettered.
- `<prefix>.dlx` exchange -> `<prefix>.webhooks.dead` quorum queue: the dead letters.
  Dead-lettering is `at-least-once` (RabbitMQ >= 3.10), which needs `reject-publish` overflow,
  so a dead letter is never dropped on its way to the dead-letter queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

ROUTING_KEY = "webhook"


@dataclass(frozen=True)
class TopologyNames:
    exchange: str
    queue: str
    dead_letter_exchange: str
    dead_letter_queue: str

    @classmethod
    def for_prefix(cls, prefix: str) -> TopologyNames:
        return cls(
            exchange=f"{prefix}.webhooks",
            queue=f"{prefix}.webhooks",
            dead_letter_exchange=f"{prefix}.dlx",
            dead_letter_queue=f"{prefix}.webhooks.dead",
        )


@dataclass(frozen=True)
class Topology:
    names: TopologyNames
    exchange: AbstractExchange
    queue: AbstractQueue
    dead_letter_queue: AbstractQueue


def queue_arguments(names: TopologyNames, delivery_limit: int) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": names.dead_letter_exchange,
        "x-dead-letter-routing-key": ROUTING_KEY,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_topology(channel: AbstractChannel, prefix: str, delivery_limit: int) -> Topology:
    """Declare (idempotently) the exchanges and queues of one deployment."""
    names = TopologyNames.for_prefix(prefix)
    dlx = await channel.declare_exchange(
        names.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    dead = await channel.declare_queue(
        names.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dlx, ROUTING_KEY)
    exchange = await channel.declare_exchange(
        names.exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    queue = await channel.declare_queue(
        names.queue, durable=True, arguments=queue_arguments(names, delivery_limit)
    )
    await queue.bind(exchange, ROUTING_KEY)
    return Topology(names=names, exchange=exchange, queue=queue, dead_letter_queue=dead)


async def delete_topology(channel: AbstractChannel, prefix: str) -> None:
    """Remove a deployment's exchanges and queues (tests and benchmarks clean up with this)."""
    names = TopologyNames.for_prefix(prefix)
    for queue in (names.queue, names.dead_letter_queue):
        await channel.queue_delete(queue)
    for exchange in (names.exchange, names.dead_letter_exchange):
        await channel.exchange_delete(exchange)
