"""What a projection is, and the one way it is applied, live or in a replay.

A projection is a keyed fold: `key(event)` says which row an event speaks about (None: not this
projection's business), `fold(state, event) -> state` folds one stored event into that row's
state, and `row(state)` is the table row. The live worker loads the states of the keys a batch
touches, folds the batch's new events and upserts the rows: one SELECT and one INSERT per table
per batch. The replay folds the whole store with the same functions into fresh tables.

Folds must not depend on the order events arrive in (I5): each value is set by the newest event
that speaks about it, newest by `stamp()` (UseDesk's time, then kind, then UseDesk's id).
A fold owns the state it is given and may return it changed; callers never share states.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import asyncpg

from shared.db import Conn
from shared.events import Event
from shared.eventstore import StoredEvent

K = TypeVar("K")
S = TypeVar("S")

# Creation before changes in the same second, then comments, then ratings.
KIND_RANK = {"ticket_created": 0, "ticket_changed": 1, "comment_created": 2, "rating": 3}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def stamp(moment: datetime, kind: str, usedesk_id: int) -> str:
    """A string that sorts like (moment, kind rank, UseDesk id): the version of a value."""
    micros = (moment - _EPOCH) // _MICROSECOND
    return f"{micros:018d}.{KIND_RANK[kind]}.{usedesk_id:020d}"


@dataclass(frozen=True)
class Projection(Generic[K, S]):
    name: str
    table: str
    columns: tuple[str, ...]
    key: Callable[[Event], K | None]
    fold: Callable[[S | None, StoredEvent], S]
    row: Callable[[S], tuple[Any, ...]]
    # INSERT ... SELECT * FROM unnest($1, ..., $n) ON CONFLICT (key) ...: one array per column.
    # Table names are unqualified and conflicts name columns, not constraints: the replay runs
    # the same statements against fresh tables of the same names in its own schema.
    upsert_sql: str
    # SELECT the stored states of `$1` keys; None when rows are only ever inserted.
    load_sql: str | None = None
    load: Callable[[asyncpg.Record], tuple[K, S]] | None = None
    # Live only: `watch(state)` summarises a row before the batch, `observe(state, summary)` is
    # told the row after it, so a projection can log what a human should know about.
    watch: Callable[[S | None], Any] | None = None
    observe: Callable[[S, Any], None] | None = None


def fold_into(
    projection: Projection[K, S], states: dict[K, S], events: Iterable[StoredEvent]
) -> set[K]:
    """Fold `events` into `states` (in place); returns the keys that changed."""
    touched: set[K] = set()
    for stored in events:
        key = projection.key(stored.event)
        if key is None:
            continue
        states[key] = projection.fold(states.get(key), stored)
        touched.add(key)
    return touched


async def apply(conn: Conn, projection: Projection[K, S], events: Sequence[StoredEvent]) -> int:
    """Fold newly appended events into the live table; returns the rows written."""
    keys = {k for k in map(projection.key, (s.event for s in events)) if k is not None}
    if not keys:
        return 0
    states: dict[K, S] = {}
    if projection.load_sql is not None and projection.load is not None:
        records = await conn.fetch(projection.load_sql, list(keys))
        states = dict(projection.load(record) for record in records)
    watch, observe = projection.watch, projection.observe
    # Folds change their state in place: summarise what matters before folding.
    before = {key: watch(states.get(key)) for key in keys} if watch and observe else {}
    touched = fold_into(projection, states, events)
    if watch and observe:
        for key in touched:
            observe(states[key], before[key])
    rows = [projection.row(states[key]) for key in sorted(touched)]  # type: ignore[type-var]
    await conn.execute(projection.upsert_sql, *(list(column) for column in zip(*rows, strict=True)))
    return len(rows)
