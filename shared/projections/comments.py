"""`ticket_comments`: one row per comment. `author` is `from` as sent, else derived from the one
id the comment carries (`CommentCreated.side`); `type` is the visibility, or the type as sent
when it is none UseDesk documents."""

from __future__ import annotations

from typing import NamedTuple

from shared.events import CommentCreated, Event
from shared.eventstore import StoredEvent
from shared.projections.base import Bigint, Boolean, Projection, Table, Text, Timestamptz


class CommentRow(NamedTuple):
    comment_id: Bigint
    ticket_id: Bigint
    type: Text | None
    author: Text | None
    user_id: Bigint | None
    client_id: Bigint | None
    message: Text | None
    published_at: Timestamptz
    is_first: Boolean


TABLE = Table.of("ticket_comments", CommentRow, key="comment_id", on_conflict="keep")


def key(event: Event) -> int | None:
    return event.comment_id if isinstance(event, CommentCreated) else None


def fold(state: CommentRow | None, stored: StoredEvent) -> CommentRow:
    # A comment is never edited by a webhook: the first (only) event is the row.
    event = stored.event
    if state is not None:
        return state
    assert isinstance(event, CommentCreated)
    return CommentRow(
        event.comment_id,
        event.ticket_id,
        event.visibility or event.type_sent,
        event.side,
        event.user_id,
        event.client_id,
        event.message,
        event.published_at or event.occurred_at,
        event.is_first,
    )


def row(state: CommentRow) -> CommentRow:
    return state


PROJECTION: Projection[int, CommentRow] = Projection(
    name="ticket_comments", definition=TABLE, key=key, fold=fold, row=row
)
