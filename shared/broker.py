"""RabbitMQ topology, shared by the ingress (publisher) and the worker (the message itself:
`shared.envelope`).

One function declares everything so both sides always agree on the queue arguments (a
redeclare with different arguments is a channel error).

- `<prefix>.webhooks` direct exchange -> `<prefix>.webhooks` durable quorum queue with an
  explicit delivery limit; a message redelivered more often than that is dead-lettered.
- `<prefix>.dlx` exchange -> `<prefix>.webhooks.dead` quorum queue: the dead letters.
  Dead-lettering is `at-least-once` (RabbitMQ >= 3.10), which needs `reject-publish` overflow,
  so a dead letter is never dropped on its way to the dead-letter queue.

A queue's arguments are fixed when it is created: after a change of `DESKLEDGER_DELIVERY_LIMIT`
the broker refuses the declaration (PRECONDITION_FAILED) and closes the channel. That is a
configuration change, not a fault, so the declaration falls back to the queue as it exists and
logs one warning saying how to apply the new limit (issue 17): every pod crash-looped before.
Any other difference in the arguments is still an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from aiormq.exceptions import ChannelPreconditionFailed

log = structlog.get_logger()

ROUTING_KEY = "webhook"
DELIVERY_LIMIT = "x-delivery-limit"
_WARNED: set[str] = set()


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
        DELIVERY_LIMIT: delivery_limit,
        "x-dead-letter-exchange": names.dead_letter_exchange,
        "x-dead-letter-routing-key": ROUTING_KEY,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_topology(channel: AbstractChannel, prefix: str, delivery_limit: int) -> Topology:
    """Declare (idempotently) the exchanges and queues of one deployment."""
    names = TopologyNames.for_prefix(prefix)
    # The main queue first: a refused declaration closes the channel, and whatever was
    # declared on it before would have to be declared again.
    queue = await _declare_queue(channel, names, delivery_limit)
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
    await queue.bind(exchange, ROUTING_KEY)
    return Topology(names=names, exchange=exchange, queue=queue, dead_letter_queue=dead)


async def _declare_queue(
    channel: AbstractChannel, names: TopologyNames, delivery_limit: int
) -> AbstractQueue:
    """The main queue with our arguments, or as it exists when it was created with others."""
    try:
        return await channel.declare_queue(
            names.queue, durable=True, arguments=queue_arguments(names, delivery_limit)
        )
    except ChannelPreconditionFailed as exc:
        # Only the limit is a setting to carry on without. Any other difference (a classic
        # queue where a quorum queue belongs, no dead-letter exchange) breaks a promise (I1,
        # I6): that stays an error.
        # The broker names one argument; a changed limit reads "received '30' but current is
        # '20'", a queue made otherwise "... but current is none".
        text = str(exc)
        if f"'{DELIVERY_LIMIT}'" not in text or "but current is '" not in text:
            raise
        # Once per process and queue: channels are reopened after every broker hiccup.
        warn = log.debug if names.queue in _WARNED else log.warning
        _WARNED.add(names.queue)
        warn(
            "queue_arguments_differ",
            queue=names.queue,
            delivery_limit=delivery_limit,
            broker=str(exc),
            hint=(
                "the queue keeps the arguments it was created with; carrying on with them. "
                "To lower the limit, add a policy (the lower of policy and argument applies): "
                f"rabbitmqctl set_policy {names.queue}-limit '^{re.escape(names.queue)}$' "
                f"'{{\"delivery-limit\": {delivery_limit}}}' --apply-to queues; "
                "to raise it, drain the queue and delete it, the next start creates it anew"
            ),
        )
    if channel.is_closed:
        await channel.reopen()
    return await channel.declare_queue(names.queue, passive=True)


async def delete_topology(channel: AbstractChannel, prefix: str) -> None:
    """Remove a deployment's exchanges and queues (tests and benchmarks clean up with this)."""
    names = TopologyNames.for_prefix(prefix)
    for queue in (names.queue, names.dead_letter_queue):
        await channel.queue_delete(queue)
    for exchange in (names.exchange, names.dead_letter_exchange):
        await channel.exchange_delete(exchange)
