"""`ticket_field_changes`: one row per entry of a change event's `data[]`, every target.

The field history analysts query: who changed which field of which ticket from what to what,
and when (`changed_at` as in `ticket_status_changes`, with its `time_source`). `entry` is the
entry's place in `data[]`; `source_id` the change id (`trigger.id`). Values are text as UseDesk
sent them (`value_json` / `old_value_json` keep the JSON of a value sent as a number, a flag or
an array).
"""

from __future__ import annotations

from typing import NamedTuple

from shared.events import Event, TicketChanged
from shared.eventstore import StoredEvent
from shared.projections.base import Bigint, Integer, Projection, Table, Text, Timestamptz


class FieldChangeRow(NamedTuple):
    source_id: Text
    entry: Integer
    ticket_id: Bigint
    change_id: Bigint
    field: Text
    old_value: Text | None
    new_value: Text | None
    old_value_json: Text | None
    new_value_json: Text | None
    changed_at: Timestamptz
    time_source: Text
    user_id: Bigint | None
    trigger_id: Bigint | None


TABLE = Table.of(
    "ticket_field_changes", FieldChangeRow, key=("source_id", "entry"), on_conflict="keep"
)


def key(event: Event) -> str | None:
    return event.source_id if isinstance(event, TicketChanged) and event.changes else None


def fold(state: list[FieldChangeRow] | None, stored: StoredEvent) -> list[FieldChangeRow]:
    # One change event is one fact; a state that exists already came from this same event.
    event = stored.event
    if state is not None:
        return state
    assert isinstance(event, TicketChanged)
    return [
        FieldChangeRow(
            event.source_id,
            entry,
            event.ticket_id,
            event.change_id,
            change.target,
            change.old_value,
            change.value,
            change.old_value_json,
            change.value_json,
            event.occurred_at,
            event.time_source,
            event.user_id,
            event.rule_id,
        )
        for entry, change in enumerate(event.changes)
    ]


def rows(state: list[FieldChangeRow]) -> list[FieldChangeRow]:
    return state


PROJECTION: Projection[str, list[FieldChangeRow]] = Projection(
    name="ticket_field_changes", definition=TABLE, key=key, fold=fold, row=rows, many=True
)
