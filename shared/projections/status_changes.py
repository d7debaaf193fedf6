"""`ticket_status_changes`: one row per real status change (docs/semantics.md).

A change event is a status change when it names a new status that differs from its old one
(an unknown old status counts as different). An assignee change or the `message_from_client`
trigger that repeats the status (`1` → `1`) is not one. `changed_at` is UseDesk's time, or our
receive time for an undated change (`time_source` says which); order a ticket's changes by
`change_id`, UseDesk's own order.
"""

from __future__ import annotations

from typing import NamedTuple

from shared.events import Event, TicketChanged
from shared.eventstore import StoredEvent
from shared.projections.base import Bigint, Integer, Projection, Table, Text, Timestamptz


class StatusChangeRow(NamedTuple):
    source_id: Text
    ticket_id: Bigint
    old_status: Integer | None
    new_status: Integer | None
    changed_at: Timestamptz
    user_id: Bigint | None
    trigger_id: Bigint | None
    changed_by: Text
    change_id: Bigint
    time_source: Text


TABLE = Table.of("ticket_status_changes", StatusChangeRow, key="source_id", on_conflict="keep")


def key(event: Event) -> str | None:
    if (
        isinstance(event, TicketChanged)
        and event.new_status is not None
        and event.old_status != event.new_status
    ):
        return event.source_id
    return None


def fold(state: StatusChangeRow | None, stored: StoredEvent) -> StatusChangeRow:
    # One change is one fact; a state that exists already came from this same event.
    event = stored.event
    if state is not None:
        return state
    assert isinstance(event, TicketChanged)
    return StatusChangeRow(
        event.source_id,
        event.ticket_id,
        event.old_status,
        event.new_status,
        event.occurred_at,
        event.user_id,
        event.rule_id,
        event.changed_by,
        event.change_id,
        event.time_source,
    )


def row(state: StatusChangeRow) -> StatusChangeRow:
    return state


PROJECTION: Projection[str, StatusChangeRow] = Projection(
    name="ticket_status_changes", definition=TABLE, key=key, fold=fold, row=row
)
