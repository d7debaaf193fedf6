"""`ticket_ratings`: one row per rating; a later version of a rating replaces the earlier one."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.events import Event, RatingGiven
from shared.eventstore import StoredEvent
from shared.projections.base import Projection, stamp

COLUMNS = (
    "rating_id",
    "ticket_id",
    "rating",
    "comment",
    "client_id",
    "user_id",
    "ticket_comment_id",
    "created_at",
    "updated_at",
)


class RatingState:
    __slots__ = ("row", "version")

    def __init__(self, version: str, row: tuple[Any, ...]) -> None:
        self.version = version
        self.row = row


def _version(event: RatingGiven) -> str:
    return stamp(event.updated_at or event.occurred_at, event.type, event.rating_id)


def key(event: Event) -> int | None:
    return event.rating_id if isinstance(event, RatingGiven) else None


def fold(state: RatingState | None, stored: StoredEvent) -> RatingState:
    event = stored.event
    assert isinstance(event, RatingGiven)
    version = _version(event)
    if state is not None and state.version >= version:
        return state
    return RatingState(
        version,
        (
            event.rating_id,
            event.ticket_id,
            event.rating,
            event.comment,
            event.client_id,
            event.user_id,
            event.ticket_comment_id,
            event.created_at,
            event.updated_at,
        ),
    )


def row(state: RatingState) -> tuple[Any, ...]:
    return state.row


def load(record: asyncpg.Record) -> tuple[int, RatingState]:
    values = tuple(record[column] for column in COLUMNS)
    moment = record["updated_at"] or record["created_at"]
    version = stamp(moment, "rating", record["rating_id"]) if moment else ""
    return record["rating_id"], RatingState(version, values)


LOAD = """
SELECT
    rating_id,
    ticket_id,
    rating,
    comment,
    client_id,
    user_id,
    ticket_comment_id,
    created_at,
    updated_at
FROM ticket_ratings
WHERE rating_id = ANY($1::bigint[])
"""

UPSERT = """
INSERT INTO ticket_ratings (
    rating_id,
    ticket_id,
    rating,
    comment,
    client_id,
    user_id,
    ticket_comment_id,
    created_at,
    updated_at
)
SELECT * FROM unnest(
    $1::bigint[], $2::bigint[], $3::integer[], $4::text[], $5::bigint[], $6::bigint[],
    $7::bigint[], $8::timestamptz[], $9::timestamptz[]
)
ON CONFLICT (rating_id) DO UPDATE SET
    ticket_id = EXCLUDED.ticket_id,
    rating = EXCLUDED.rating,
    comment = EXCLUDED.comment,
    client_id = EXCLUDED.client_id,
    user_id = EXCLUDED.user_id,
    ticket_comment_id = EXCLUDED.ticket_comment_id,
    created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at
"""

PROJECTION: Projection[int, RatingState] = Projection(
    name="ticket_ratings",
    table="ticket_ratings",
    columns=COLUMNS,
    key=key,
    fold=fold,
    row=row,
    upsert_sql=UPSERT,
    load_sql=LOAD,
    load=load,
)
