"""`deskledger dlq list | show ID | requeue (ID | --all)`: the dead-letter queue, without a shovel.

A message lands in `<prefix>.webhooks.dead` after DESKLEDGER_DELIVERY_LIMIT failed deliveries
(the worker logs each failure with the delivery id). Reading the queue here takes its messages
without acking them and lets them go back when the channel closes, so `list` and `show` change
nothing. `requeue` publishes a dead letter back to the main exchange with the same message id,
properties and headers (minus the broker's own death bookkeeping, which it rewrites),
persistent and confirmed by the broker, and only then acks the dead letter: a crash in between
leaves a copy in both queues, and the worker's delivery id makes the second one a no-op (I3).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from services import runner
from services.runner import positive_int
from shared.broker import ROUTING_KEY, TopologyNames
from shared.errors import DeskLedgerError
from shared.settings import Settings, settings_help

BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
BODY_SHOWN = 4000


class DeadLetterNotFound(DeskLedgerError):
    """No dead letter has that delivery id."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dlq",
        help="the dead-letter queue: list, show why a delivery was dead-lettered, requeue",
        description=(
            "Look at and empty the dead-letter queue DESKLEDGER_AMQP_PREFIX.webhooks.dead. "
            "`list` and `show` only read (the messages stay where they are); `requeue` puts "
            "dead letters back on the webhook queue after the cause is fixed, with the same "
            "delivery id, so what was already recorded is absorbed as a duplicate."
        ),
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the dead letters: id, kind, received, why")
    listing.add_argument("--limit", type=positive_int, default=100, metavar="N")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = actions.add_parser("show", help="one dead letter: headers, why, and its body")
    show.add_argument("delivery_id", metavar="ID")
    requeue = actions.add_parser("requeue", help="put dead letters back on the webhook queue")
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("delivery_id", nargs="?", metavar="ID")
    which.add_argument("--all", action="store_true", help="every dead letter")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return runner.run("dlq", settings, lambda: _main(args, settings), uses="RabbitMQ")


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    names = TopologyNames.for_prefix(settings.amqp_prefix)
    if args.action == "list":
        lines = await listing(settings, args.limit, as_json=args.json)
        for line in lines:
            print(line)
        if not lines and not args.json:
            print(f"no dead letters in {names.dead_letter_queue}")
    elif args.action == "show":
        print(json.dumps(await show(settings, args.delivery_id), indent=2, default=str))
    else:
        moved = await requeue(settings, None if args.all else args.delivery_id)
        print(f"requeued {moved} dead letter(s) to {names.exchange}")
    return 0


@asynccontextmanager
async def _dead_letters(settings: Settings) -> AsyncIterator[tuple[AbstractChannel, AbstractQueue]]:
    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        names = TopologyNames.for_prefix(settings.amqp_prefix)
        yield channel, await channel.declare_queue(names.dead_letter_queue, passive=True)


async def _browse(queue: AbstractQueue, limit: int) -> AsyncIterator[AbstractIncomingMessage]:
    """Up to `limit` messages, unacked (they return to the queue when the channel closes)."""
    for _ in range(limit):
        message = await queue.get(no_ack=False, fail=False, timeout=10)
        if message is None:
            return
        yield message


def describe(message: AbstractIncomingMessage) -> dict[str, Any]:
    """A dead letter's id and why it died, from its `x-death` header (the newest first)."""
    headers: dict[str, Any] = dict(message.headers or {})
    deaths = headers.get("x-death")
    last: dict[str, Any] = dict(deaths[0]) if isinstance(deaths, list) and deaths else {}
    return {
        "delivery_id": message.message_id,
        "kind": _text(headers.get("x-deskledger-kind")),
        "received_at": message.timestamp,
        "reason": _text(last.get("reason")),
        "queue": _text(last.get("queue")),
        "deaths": last.get("count"),
        "dead_since": last.get("time"),
    }


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


async def listing(settings: Settings, limit: int, as_json: bool = False) -> list[str]:
    lines: list[str] = []
    async with _dead_letters(settings) as (_, queue):
        async for message in _browse(queue, limit):
            d = describe(message)
            kind, received = d["kind"] or "?", _when(d["received_at"])
            lines.append(
                json.dumps(d, default=str)
                if as_json
                else f"{d['delivery_id']}  {kind:<16} received {received}"
                f"  {d['reason']} from {d['queue']} ({d['deaths']}x)"
            )
    return lines


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "?"


async def show(settings: Settings, delivery_id: str) -> dict[str, Any]:
    async with _dead_letters(settings) as (_, queue):
        count = queue.declaration_result.message_count or 0
        async for message in _browse(queue, count):
            if message.message_id == delivery_id:
                body = message.body.decode("utf-8", "replace")
                return {
                    **describe(message),
                    "headers": {k: _text(v) for k, v in (message.headers or {}).items()},
                    "content_type": message.content_type,
                    "body": body[:BODY_SHOWN] + ("…" if len(body) > BODY_SHOWN else ""),
                    "hint": "the worker's `delivery_failed` log lines for this delivery_id "
                    "say what failed",
                }
    raise DeadLetterNotFound(f"no dead letter with delivery id {delivery_id!r}")


async def requeue(settings: Settings, delivery_id: str | None) -> int:
    """Requeue the dead letter `delivery_id`, or every one (None); returns how many."""
    names = TopologyNames.for_prefix(settings.amqp_prefix)
    moved = 0
    async with _dead_letters(settings) as (channel, queue):
        exchange = await channel.get_exchange(names.exchange, ensure=True)
        # As many as there were: a requeued message that dies again waits for the next run.
        count = queue.declaration_result.message_count or 0
        async for message in _browse(queue, count):
            if delivery_id is not None and message.message_id != delivery_id:
                continue
            await exchange.publish(_again(message), ROUTING_KEY, mandatory=True, timeout=10)
            await message.ack()
            moved += 1
            if delivery_id is not None:
                break
    if delivery_id is not None and not moved:
        raise DeadLetterNotFound(f"no dead letter with delivery id {delivery_id!r}")
    return moved


def _again(message: AbstractIncomingMessage) -> aio_pika.Message:
    headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith(BROKER_HEADERS)}
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
    )
