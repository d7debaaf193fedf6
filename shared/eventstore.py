"""The append-only event store: the one module that appends to, reads and locks `events`.

Ordering guarantee (the commit-order gap problem). `position` comes from an identity sequence,
and sequence values are handed out before commit: with two writers, position 11 can commit
before position 10, and a reader that follows `position` and has already seen 11 would skip 10
for ever. We *serialise appends*: every appending transaction first takes the transaction-level
advisory lock `APPEND_LOCK_KEY` (`lock_appends`) and holds it to COMMIT, so positions become
visible strictly in order and `max(position)` in any snapshot is a safe high-water mark. The
cost is one appending transaction at a time across all workers; batching (hundreds of events
per transaction) keeps that cheap, and it also makes the projection updates of the same
transaction deadlock-free. The replay takes the same lock for its final catch-up and table
swap, and holds it at session level (`pause_appends`) to compare with appends paused.

`position` is ordered, not dense: a conflicting insert or a rolled-back batch consumes sequence
values, so a reader follows `position > last seen` and never assumes the next number.

Reading: `read_after` (everything after a position, in order, within the caller's snapshot),
`read_all` (the same in a snapshot of its own), `read_ticket` (one ticket's stream), and
`READ_BY_TICKET` with `decode_row` (the replay's bulk load, in `(ticket_id, position)` order).
`data` is `json` (migration 0006): PostgreSQL sends the text as the worker wrote it, where jsonb
had to be rendered back to text on every read (three times the server CPU). Every read selects
`data` itself; a connection passed to `raw_json` receives it as the UTF-8 bytes PostgreSQL sent,
which msgspec decodes directly (the replay's and the baseline's readers); any other connection
gets a str, which decodes to the same event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg

from shared.db import Conn
from shared.events import Event, decode_event, encode_event
from shared.usedesk.dates import read_dates

# How DeskLedger learned a fact (`events.source`): a webhook, or UseDesk's REST API (reconcile).
Source = Literal["webhook", "api"]

# Advisory lock key of appends (and of the replay's swap); any constant, kept forever.
APPEND_LOCK_KEY = 7_204_611_833_092_002

TAKE_APPEND_LOCK = "SELECT pg_advisory_xact_lock($1)"
PAUSE_APPENDS = "SELECT pg_advisory_lock($1)"
RESUME_APPENDS = "SELECT pg_advisory_unlock($1)"

APPEND = """
INSERT INTO events (
    ticket_id,
    type,
    source_id,
    occurred_at,
    data,
    delivery_id,
    source
)
SELECT *
FROM unnest(
    $1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::json[], $6::uuid[], $7::text[]
)
ON CONFLICT ON CONSTRAINT events_type_source_id_key DO NOTHING
RETURNING position, type, source_id
"""

READ_AFTER = """
SELECT position, data, delivery_id
FROM events
WHERE position > $1 AND ($2::bigint IS NULL OR position <= $2)
ORDER BY position
"""
READ_TICKET = """
SELECT position, data, delivery_id
FROM events
WHERE ticket_id = $1
ORDER BY position
"""
# Up to a high-water mark `$1`, the tickets `$2 <= ticket_id < $3` (NULL: no bound), in the
# order of `events_ticket_id_position_idx`, so PostgreSQL sorts nothing.
READ_BY_TICKET = """
SELECT ticket_id, position, data, delivery_id
FROM events
WHERE position <= $1
  AND ($2::bigint IS NULL OR ticket_id >= $2)
  AND ($3::bigint IS NULL OR ticket_id < $3)
ORDER BY ticket_id, position
"""
# One ticket's events as a person reads them (`deskledger ticket`): keys, source, times.
TICKET_LOG = """
SELECT
    position,
    type,
    source_id,
    source,
    occurred_at,
    recorded_at,
    delivery_id
FROM events
WHERE ticket_id = $1
ORDER BY position
"""
HIGH_WATER_MARK = "SELECT coalesce(max(position), 0) FROM events"
FIRST_POSITION = "SELECT coalesce(min(position), 1) FROM events"
# Ticket ids that cut the store into parts of about as many events: percentiles of a 1% sample
# of its pages (a few milliseconds; NULL when the sample is empty).
TICKET_SPLITS = """
SELECT percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY ticket_id)
FROM events TABLESAMPLE SYSTEM (1)
"""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    event: Event
    delivery_id: UUID


@dataclass(frozen=True, slots=True)
class NewEvent:
    event: Event
    delivery_id: UUID
    source: Source = "webhook"


def _json(event: Event) -> str:
    # PostgreSQL's text (and so `->>` and `data::jsonb`) cannot hold U+0000; the decoder
    # replaces it already (`events.without_nul`), this keeps any other path from storing one.
    return encode_event(event).decode().replace("\\u0000", "\\ufffd")


def _utf8(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


async def raw_json(conn: asyncpg.Connection) -> None:
    """Make `conn` return `json` values as the bytes PostgreSQL sent (binary format: the text
    itself), not as a str: no UTF-8 decode in Python and none again in msgspec. It still takes
    a str (or bytes) for a `json` parameter, so `append` works on it as on any connection."""
    await conn.set_type_codec(
        "json", schema="pg_catalog", encoder=_utf8, decoder=bytes, format="binary"
    )


async def lock_appends(conn: Conn) -> None:
    """Take the append lock until the current transaction ends (see the module doc)."""
    await conn.execute(TAKE_APPEND_LOCK, APPEND_LOCK_KEY)


async def pause_appends(conn: Conn) -> None:
    """Hold the append lock at session level: no append is in flight, none can start, until
    `resume_appends`. Session and transaction advisory locks on one key conflict."""
    await conn.execute(PAUSE_APPENDS, APPEND_LOCK_KEY)


async def resume_appends(conn: Conn) -> None:
    await conn.execute(RESUME_APPENDS, APPEND_LOCK_KEY)


async def append(conn: Conn, batch: Sequence[NewEvent]) -> list[StoredEvent]:
    """Append what is new in `batch`; returns only the events this call stored, in position order.

    The caller holds `lock_appends` in its transaction (taken before it read anything it decides
    on; `recording` does). An event whose `(type, source_id)` is already stored is skipped:
    that is how redeliveries and duplicate webhooks become one event.
    """
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
        [item.source for item in batch],
    )
    by_key = {(item.event.type, item.event.source_id): item for item in batch}
    stored = []
    for row in rows:
        item = by_key[row["type"], row["source_id"]]
        stored.append(StoredEvent(row["position"], item.event, item.delivery_id))
    stored.sort(key=lambda s: s.position)
    return stored


def decode_row(
    position: int, data: bytes | str, delivery_id: UUID, tz: ZoneInfo | None = None
) -> StoredEvent:
    """A row of any read here (`data` as UTF-8 bytes, or a str) as a stored event; with `tz`,
    its instants read again from UseDesk's date text in that zone (`mapping.read_dates`): how
    the replay follows a corrected DESKLEDGER_SOURCE_TIMEZONE."""
    event = decode_event(data)
    return StoredEvent(position, read_dates(event, tz) if tz else event, delivery_id)


def _stored(row: Any, tz: ZoneInfo | None) -> StoredEvent:
    return decode_row(row["position"], row["data"], row["delivery_id"], tz)


async def high_water_mark(conn: Conn) -> int:
    """The last position every reader can see; safe because appends are serialised."""
    value: int = await conn.fetchval(HIGH_WATER_MARK)
    return value


async def first_position(conn: Conn) -> int:
    """The first position (1 for an empty store): with the high-water mark, a close upper
    bound of the number of events that costs nothing where count(*) scans the store."""
    value: int = await conn.fetchval(FIRST_POSITION)
    return value


async def ticket_splits(conn: Conn, parts: int) -> list[int | None]:
    """Ticket ids that cut the store into `parts` ranges of about as many events."""
    if parts < 2:
        return []
    splits: list[int | None] | None = await conn.fetchval(
        TICKET_SPLITS, [n / parts for n in range(1, parts)]
    )
    return splits or []


async def read_after(
    conn: Conn,
    after: int = 0,
    until: int | None = None,
    chunk: int = 5000,
    tz: ZoneInfo | None = None,
) -> AsyncIterator[list[StoredEvent]]:
    """Events with `after < position <= until` (no bound: all), in order, in chunks, through a
    server-side cursor, within the caller's transaction and so its snapshot.

    Positions visible in one snapshot form a prefix of the store (appends are serialised), so
    reading `position > after` misses nothing; passing the last position read to the next call
    reads nothing twice.
    """
    cursor = await conn.cursor(READ_AFTER, after, until)
    while rows := await cursor.fetch(chunk):
        yield [_stored(row, tz) for row in rows]


async def read_all(
    conn: Conn,
    after: int = 0,
    until: int | None = None,
    chunk: int = 5000,
    tz: ZoneInfo | None = None,
) -> AsyncIterator[list[StoredEvent]]:
    """`read_after` in a REPEATABLE READ transaction of its own: one snapshot for the whole
    scan, memory bounded by `chunk` whatever the store's size."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        last = await high_water_mark(conn) if until is None else until
        async for events in read_after(conn, after, last, chunk, tz):
            yield events


async def read_ticket(conn: Conn, ticket_id: int, tz: ZoneInfo | None = None) -> list[StoredEvent]:
    """One ticket's events in position order."""
    return [_stored(row, tz) for row in await conn.fetch(READ_TICKET, ticket_id)]


async def ticket_log(conn: Conn, ticket_id: int) -> list[dict[str, Any]]:
    """One ticket's events in position order, without their data: position, type, source_id,
    source, occurred_at, recorded_at, delivery_id."""
    return [dict(row.items()) for row in await conn.fetch(TICKET_LOG, ticket_id)]
