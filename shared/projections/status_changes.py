"""`ticket_status_changes`: one row per ticket change that set a status."""

from __future__ import annotations

from typing import Any

from shared.events import Event, TicketChanged
from shared.eventstore import StoredEvent
from shared.projections.base import Projection

COLUMNS = (
    "source_id",
    "ticket_id",
    "old_status",
    "new_status",
    "changed_at",
    "user_id",
    "trigger_id",
    "changed_by",
)


def key(event: Event) -> str | None:
    if isinstance(event, TicketChanged) and event.new_status is not None:
        return event.source_id
    return None


def fold(state: tuple[Any, ...] | None, stored: StoredEvent) -> tuple[Any, ...]:
    # One change is one fact; a state that exists already came from this same event.
    event = stored.event
    if state is not None or not isinstance(event, TicketChanged):
        return state if state is not None else ()
    return (
        event.source_id,
        event.ticket_id,
        event.old_status,
        event.new_status,
        event.occurred_at,
        event.user_id,
        event.rule_id,
        event.changed_by,
    )


def row(state: tuple[Any, ...]) -> tuple[Any, ...]:
    return state


UPSERT = """
INSERT INTO ticket_status_changes (
    source_id,
    ticket_id,
    old_status,
    new_status,
    changed_at,
    user_id,
    trigger_id,
    changed_by
)
SELECT * FROM unnest(
    $1::text[], $2::bigint[], $3::integer[], $4::integer[], $5::timestamptz[], $6::bigint[],
    $7::bigint[], $8::text[]
)
ON CONFLICT (source_id) DO NOTHING
"""

PROJECTION: Projection[str, tuple[Any, ...]] = Projection(
    name="ticket_status_changes",
    table="ticket_status_changes",
    columns=COLUMNS,
    key=key,
    fold=fold,
    row=row,
    upsert_sql=UPSERT,
)
