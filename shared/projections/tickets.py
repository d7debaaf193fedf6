"""`tickets`: one row per ticket, from its creation, changes, comments and ratings.

Every value carries the version (`base.stamp`) of the event that set it and is replaced only by
a newer one, so a change that arrives before its ticket's creation makes a partial row which
the creation then completes without overwriting the newer values (I5).
"""

from __future__ import annotations

import bisect
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import structlog

from shared.events import (
    CommentCreated,
    CustomField,
    Event,
    RatingGiven,
    TicketChanged,
    TicketCreated,
)
from shared.eventstore import StoredEvent
from shared.projections.base import Projection, stamp
from shared.projections.lifecycle import StatusEntry, lifecycle

log = structlog.get_logger()

Scalar = int | str | None


class TicketState(msgspec.Struct, kw_only=True):
    ticket_id: int
    created: bool = False
    values: dict[str, Scalar] = {}
    published_at: datetime | None = None
    versions: dict[str, str] = {}
    # field id -> [version, name, value]
    custom_fields: dict[str, tuple[str, str | None, str | None]] = {}
    # tag -> [version, present]
    tags: dict[str, tuple[str, bool]] = {}
    history: list[StatusEntry] = []
    comments_count: int = 0
    first_response_at: datetime | None = None
    last_updated_at: datetime | None = None
    rating: int | None = None
    events_count: int = 0


# Deterministic: the same set of events gives the same bytes, whatever their arrival order.
_encoder = msgspec.json.Encoder(order="deterministic")
# The fold's own state is stored as MessagePack, not jsonb: nothing queries it, and every batch
# rewrites and rereads it, which as jsonb cost a JSON parse on write and a text rendering on read.
_state_encoder = msgspec.msgpack.Encoder(order="deterministic")
_state_decoder = msgspec.msgpack.Decoder(TicketState)


def _newer(state: TicketState, field: str, version: str) -> bool:
    if version <= state.versions.get(field, ""):
        return False
    state.versions[field] = version
    return True


def _set(state: TicketState, field: str, value: Scalar, version: str) -> None:
    if _newer(state, field, version):
        state.values[field] = value


def _later(current: datetime | None, candidate: datetime | None) -> datetime | None:
    if candidate is None or (current is not None and current >= candidate):
        return current
    return candidate


def _custom_fields(state: TicketState, fields: tuple[CustomField, ...], version: str) -> None:
    for field in fields:
        if field.id is None:
            continue
        current = state.custom_fields.get(str(field.id))
        if current is None or current[0] < version:
            state.custom_fields[str(field.id)] = (version, field.name, field.value)


def _int_or_none(text: str | None) -> int | None:
    if text is None or not text.strip().lstrip("-").isdigit():
        return None
    value = int(text)
    return value or None  # UseDesk says "0" for "no group" / "nobody"


def _tags(state: TicketState, text: str | None, present: bool, version: str) -> None:
    for tag in (part.strip() for part in (text or "").split(",")):
        if tag and (tag not in state.tags or state.tags[tag][0] < version):
            state.tags[tag] = (version, present)


def _history(state: TicketState, entry: StatusEntry) -> None:
    """Keep the history sorted by version, so the stored state does not depend on arrival order."""
    if all(existing.stamp != entry.stamp for existing in state.history):
        bisect.insort(state.history, entry, key=lambda e: e.stamp)


def _created(state: TicketState, event: TicketCreated) -> None:
    version = stamp(event.occurred_at, event.type, event.ticket_id)
    state.created = True
    for field in (
        "company_id",
        "subject",
        "client_id",
        "assignee_id",
        "group_id",
        "channel_id",
        "email",
    ):
        _set(state, field, getattr(event, field), version)
    if _newer(state, "published_at", version):
        state.published_at = event.published_at or event.occurred_at
    _custom_fields(state, event.custom_fields, version)
    state.last_updated_at = _later(
        state.last_updated_at, event.last_updated_at or event.occurred_at
    )
    if event.status_id is not None:
        at = event.published_at or event.occurred_at
        _history(
            state,
            StatusEntry(version, at, None, event.status_id, f"{event.type}:{event.source_id}"),
        )


_CHANGE_TARGETS = {"assignee_id": "assignee_id", "group": "group_id", "group_id": "group_id"}


def _changed(state: TicketState, event: TicketChanged) -> None:
    version = stamp(event.occurred_at, event.type, event.change_id)
    if event.company_id is not None:
        _set(state, "company_id", event.company_id, version)
    for change in event.changes:
        if change.target in _CHANGE_TARGETS:
            _set(state, _CHANGE_TARGETS[change.target], _int_or_none(change.value), version)
        elif change.target == "subject":
            _set(state, "subject", change.value, version)
        elif change.target in ("new_tags", "removed_tags"):
            _tags(state, change.value, change.target == "new_tags", version)
    _custom_fields(state, event.custom_fields, version)
    state.last_updated_at = _later(state.last_updated_at, event.occurred_at)
    if event.new_status is not None:
        _history(
            state,
            StatusEntry(
                version,
                event.occurred_at,
                event.old_status,
                event.new_status,
                f"{event.type}:{event.source_id}",
            ),
        )


def _commented(state: TicketState, event: CommentCreated) -> None:
    state.comments_count += 1
    at = event.published_at or event.occurred_at
    if event.visibility == "public" and event.author == "user":
        first = state.first_response_at
        state.first_response_at = at if first is None or at < first else first
    state.last_updated_at = _later(state.last_updated_at, at)


def _rated(state: TicketState, event: RatingGiven) -> None:
    version = stamp(event.updated_at or event.occurred_at, event.type, event.rating_id)
    if _newer(state, "rating", version):
        state.rating = event.rating


def fold(state: TicketState | None, stored: StoredEvent) -> TicketState:
    event = stored.event
    state = state if state is not None else TicketState(ticket_id=event.ticket_id)
    state.events_count += 1
    match event:
        case TicketCreated():
            _created(state, event)
        case TicketChanged():
            _changed(state, event)
        case CommentCreated():
            _commented(state, event)
        case RatingGiven():
            _rated(state, event)
    return state


def key(event: Event) -> int:
    return event.ticket_id


COLUMNS = (
    "ticket_id",
    "company_id",
    "status_id",
    "subject",
    "client_id",
    "assignee_id",
    "group_id",
    "channel_id",
    "email",
    "published_at",
    "last_updated_at",
    "custom_fields",
    "tags",
    "comments_count",
    "rating",
    "first_response_at",
    "first_resolved_at",
    "resolved_at",
    "reopened_count",
    "status_durations",
    "suspected_gaps",
    "partial",
    "events_count",
    "fold_state",
)


def row(state: TicketState) -> tuple[Any, ...]:
    metrics = lifecycle(state.history)
    v = state.values
    fields = {
        k: {"name": name, "value": value}
        for k, (_, name, value) in sorted(state.custom_fields.items())
    }
    tags = sorted(tag for tag, (_, present) in state.tags.items() if present)
    return (
        state.ticket_id,
        v.get("company_id"),
        metrics.status_id,
        v.get("subject"),
        v.get("client_id"),
        v.get("assignee_id"),
        v.get("group_id"),
        v.get("channel_id"),
        v.get("email"),
        state.published_at,
        state.last_updated_at,
        _encoder.encode(fields).decode(),
        _encoder.encode(tags).decode(),
        state.comments_count,
        state.rating,
        state.first_response_at,
        metrics.first_resolved_at,
        metrics.resolved_at,
        metrics.reopened_count,
        _encoder.encode(metrics.status_durations).decode(),
        len(metrics.gaps),
        not state.created,
        state.events_count,
        _state_encoder.encode(state),
    )


def load(record: asyncpg.Record) -> tuple[int, TicketState]:
    return record["ticket_id"], _state_decoder.decode(record["fold_state"])


def watch(state: TicketState | None) -> frozenset[tuple[str, str]]:
    return frozenset(lifecycle(state.history).gaps) if state is not None else frozenset()


def observe(after: TicketState, known: frozenset[tuple[str, str]]) -> None:
    """Log every newly suspected gap (a lost webhook?) with both event ids."""
    for previous_event, event in lifecycle(after.history).gaps:
        if (previous_event, event) not in known:
            log.warning(
                "suspected_gap",
                ticket_id=after.ticket_id,
                previous_event=previous_event,
                gap_event=event,
                hint="a change's old status is not the status the previous change left",
            )


LOAD = """
SELECT ticket_id, fold_state
FROM tickets
WHERE ticket_id = ANY($1::bigint[])
"""

UPSERT = """
INSERT INTO tickets (
    ticket_id, company_id, status_id, subject, client_id, assignee_id, group_id,
    channel_id, email, published_at, last_updated_at, custom_fields, tags,
    comments_count, rating, first_response_at, first_resolved_at, resolved_at,
    reopened_count, status_durations, suspected_gaps, partial, events_count,
    fold_state
)
SELECT * FROM unnest(
    $1::bigint[], $2::bigint[], $3::integer[], $4::text[], $5::bigint[], $6::bigint[],
    $7::bigint[], $8::bigint[], $9::text[], $10::timestamptz[], $11::timestamptz[],
    $12::jsonb[], $13::jsonb[], $14::integer[], $15::integer[], $16::timestamptz[],
    $17::timestamptz[], $18::timestamptz[], $19::integer[], $20::jsonb[], $21::integer[],
    $22::boolean[], $23::integer[], $24::bytea[]
)
ON CONFLICT (ticket_id) DO UPDATE SET
    company_id = EXCLUDED.company_id,
    status_id = EXCLUDED.status_id,
    subject = EXCLUDED.subject,
    client_id = EXCLUDED.client_id,
    assignee_id = EXCLUDED.assignee_id,
    group_id = EXCLUDED.group_id,
    channel_id = EXCLUDED.channel_id,
    email = EXCLUDED.email,
    published_at = EXCLUDED.published_at,
    last_updated_at = EXCLUDED.last_updated_at,
    custom_fields = EXCLUDED.custom_fields,
    tags = EXCLUDED.tags,
    comments_count = EXCLUDED.comments_count,
    rating = EXCLUDED.rating,
    first_response_at = EXCLUDED.first_response_at,
    first_resolved_at = EXCLUDED.first_resolved_at,
    resolved_at = EXCLUDED.resolved_at,
    reopened_count = EXCLUDED.reopened_count,
    status_durations = EXCLUDED.status_durations,
    suspected_gaps = EXCLUDED.suspected_gaps,
    partial = EXCLUDED.partial,
    events_count = EXCLUDED.events_count,
    fold_state = EXCLUDED.fold_state
"""

PROJECTION: Projection[int, TicketState] = Projection(
    name="tickets",
    table="tickets",
    columns=COLUMNS,
    key=key,
    fold=fold,
    row=row,
    upsert_sql=UPSERT,
    load_sql=LOAD,
    load=load,
    watch=watch,
    observe=observe,
)
