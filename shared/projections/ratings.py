"""`ticket_ratings`: one row per rating; a later version of a rating replaces the earlier one."""

from __future__ import annotations

from typing import NamedTuple

import asyncpg

from shared.events import Event, RatingGiven
from shared.eventstore import StoredEvent
from shared.projections.base import (
    Bigint,
    Integer,
    Projection,
    Table,
    Text,
    Timestamptz,
    stamp,
)


class RatingRow(NamedTuple):
    rating_id: Bigint
    ticket_id: Bigint
    rating: Integer | None
    comment: Text | None
    client_id: Bigint | None
    user_id: Bigint | None
    ticket_comment_id: Bigint | None
    created_at: Timestamptz | None
    updated_at: Timestamptz | None


TABLE = Table.of("ticket_ratings", RatingRow, key="rating_id", on_conflict="replace")


class RatingState:
    __slots__ = ("row", "version")

    def __init__(self, version: str, row: RatingRow) -> None:
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
        RatingRow(
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


def row(state: RatingState) -> RatingRow:
    return state.row


def load(record: asyncpg.Record) -> tuple[int, RatingState]:
    values = RatingRow(*record.values())
    moment = record["updated_at"] or record["created_at"]
    version = stamp(moment, "rating", record["rating_id"]) if moment else ""
    return record["rating_id"], RatingState(version, values)


PROJECTION: Projection[int, RatingState] = Projection(
    name="ticket_ratings",
    definition=TABLE,
    key=key,
    fold=fold,
    row=row,
    load_sql=TABLE.load_sql(),
    load=load,
)
