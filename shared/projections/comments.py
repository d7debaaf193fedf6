"""`ticket_comments`: one row per comment."""

from __future__ import annotations

from typing import Any

from shared.events import CommentCreated, Event
from shared.eventstore import StoredEvent
from shared.projections.base import Projection

COLUMNS = (
    "comment_id",
    "ticket_id",
    "type",
    "author",
    "user_id",
    "client_id",
    "message",
    "published_at",
    "is_first",
)


def key(event: Event) -> int | None:
    return event.comment_id if isinstance(event, CommentCreated) else None


def fold(state: tuple[Any, ...] | None, stored: StoredEvent) -> tuple[Any, ...]:
    # A comment is never edited by a webhook: the first (only) event is the row.
    event = stored.event
    if state is not None or not isinstance(event, CommentCreated):
        return state if state is not None else ()
    return (
        event.comment_id,
        event.ticket_id,
        event.visibility,
        event.author,
        event.user_id,
        event.client_id,
        event.message,
        event.published_at or event.occurred_at,
        event.is_first,
    )


def row(state: tuple[Any, ...]) -> tuple[Any, ...]:
    return state


UPSERT = """
INSERT INTO ticket_comments (
    comment_id,
    ticket_id,
    type,
    author,
    user_id,
    client_id,
    message,
    published_at,
    is_first
)
SELECT * FROM unnest(
    $1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[],
    $8::timestamptz[], $9::boolean[]
)
ON CONFLICT (comment_id) DO NOTHING
"""

PROJECTION: Projection[int, tuple[Any, ...]] = Projection(
    name="ticket_comments",
    table="ticket_comments",
    columns=COLUMNS,
    key=key,
    fold=fold,
    row=row,
    upsert_sql=UPSERT,
)
