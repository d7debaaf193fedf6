"""The append-only event store: append a batch, read everything in order, read one ticket.

Ordering guarantee (the commit-order gap problem). `position` comes from an identity sequence,
and sequence values are handed out before commit: with two writers, position 11 can commit
before position 10, and a reader that follows `position` and has already seen 11 would skip 10
for ever. We *serialise appends*: every appending transaction first takes the transaction-level
advisory lock `APPEND_LOCK_KEY` and holds it to COMMIT, so positions become visible strictly in
order and `max(position)` in any snapshot is a safe high-water mark. The cost is one appending
transaction at a time across all workers; batching (hundreds of events per transaction) keeps
that cheap, and it also makes the projection updates of the same transaction deadlock-free.
The replay takes the same lock for its final catch-up and table swap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from shared.db import Conn
from shared.events import Event, decode_event, encode_event

# pg_advisory_xact_lock key of appends (and of the replay's swap); any constant, kept forever.
APPEND_LOCK_KEY = 7_204_611_833_092_002

TAKE_APPEND_LOCK = "SELECT pg_advisory_xact_lock($1)"

APPEND = """
INSERT INTO events (
    ticket_id,
    type,
    source_id,
    occurred_at,
    data,
    delivery_id
)
SELECT *
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[], $6::uuid[])
ON CONFLICT ON CONSTRAINT events_type_source_id_key DO NOTHING
RETURNING position, type, source_id
"""

READ_RANGE = """
SELECT position, data::text AS data, delivery_id
FROM events
WHERE position > $1 AND position <= $2
ORDER BY position
"""
READ_TICKET = """
SELECT position, data::text AS data, delivery_id
FROM events
WHERE ticket_id = $1
ORDER BY position
"""
HIGH_WATER_MARK = "SELECT coalesce(max(position), 0) FROM events"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    event: Event
    delivery_id: UUID


@dataclass(frozen=True, slots=True)
class NewEvent:
    event: Event
    delivery_id: UUID


def _json(event: Event) -> str:
    # jsonb cannot hold U+0000; UseDesk text with a NUL byte would fail the whole batch.
    return encode_event(event).decode().replace("\\u0000", "\\ufffd")


async def append(conn: Conn, batch: Sequence[NewEvent]) -> list[StoredEvent]:
    """Append what is new in `batch`; returns only the events this call stored, in position order.

    Must run inside the caller's transaction (the lock is held until its COMMIT). An event whose
    `(type, source_id)` is already stored is skipped: that is how redeliveries and duplicate
    webhooks become one event.
    """
    await conn.execute(TAKE_APPEND_LOCK, APPEND_LOCK_KEY)
    if not batch:
        return []
    rows = await conn.fetch(
        APPEND,
        [item.event.ticket_id for item in batch],
        [item.event.type for item in batch],
        [item.event.source_id for item in batch],
        [item.event.occurred_at for item in batch],
        [_json(item.event) for item in batch],
        [item.delivery_id for item in batch],
    )
    by_key = {(item.event.type, item.event.source_id): item for item in batch}
    stored = []
    for row in rows:
        item = by_key[row["type"], row["source_id"]]
        stored.append(StoredEvent(row["position"], item.event, item.delivery_id))
    stored.sort(key=lambda s: s.position)
    return stored


def _stored(row: asyncpg.Record) -> StoredEvent:
    return StoredEvent(row["position"], decode_event(row["data"]), row["delivery_id"])


async def high_water_mark(conn: Conn) -> int:
    """The last position every reader can see; safe because appends are serialised."""
    value: int = await conn.fetchval(HIGH_WATER_MARK)
    return value


async def read_all(
    conn: Conn, after: int = 0, until: int | None = None, chunk: int = 5000
) -> AsyncIterator[list[StoredEvent]]:
    """Events with `after < position <= until`, in order, in chunks, through a server-side cursor.

    Memory stays bounded by `chunk` whatever the store's size. Runs in its own REPEATABLE READ
    transaction so the whole scan sees one snapshot.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        last = await high_water_mark(conn) if until is None else until
        cursor = await conn.cursor(READ_RANGE, after, last)
        while rows := await cursor.fetch(chunk):
            yield [_stored(row) for row in rows]


async def read_ticket(conn: Conn, ticket_id: int) -> list[StoredEvent]:
    """One ticket's events in position order."""
    return [_stored(row) for row in await conn.fetch(READ_TICKET, ticket_id)]
