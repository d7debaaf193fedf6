"""`tickets`: one row per ticket, from its creation, changes, comments and ratings.

Every value carries the version (`base.stamp`) of the event that set it and is replaced only by
a newer one, so a change that arrives before its ticket's creation makes a partial row which
the creation then completes without overwriting the newer values (I5).
"""

from __future__ import annotations

import bisect
from collections.abc import Collection
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
import msgspec

from shared.events import (
    CommentCreated,
    CustomField,
    Event,
    RatingGiven,
    TicketChanged,
    TicketCreated,
    TicketSnapshot,
)
from shared.eventstore import StoredEvent
from shared.projections import snapshot
from shared.projections.base import (
    Bigint,
    Boolean,
    Bytea,
    Integer,
    Jsonb,
    Projection,
    Table,
    Text,
    Timestamptz,
    stamp,
)
from shared.projections.lifecycle import StatusEntry, lifecycle

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
        case TicketSnapshot():
            snapshot.fold(state, event)
    return state


def key(event: Event) -> int:
    return event.ticket_id


class TicketRow(NamedTuple):
    ticket_id: Bigint
    company_id: Bigint | None
    status_id: Integer | None
    subject: Text | None
    client_id: Bigint | None
    assignee_id: Bigint | None
    group_id: Bigint | None
    channel_id: Bigint | None
    email: Text | None
    published_at: Timestamptz | None
    last_updated_at: Timestamptz | None
    custom_fields: Jsonb
    tags: Jsonb
    comments_count: Integer
    rating: Integer | None
    first_response_at: Timestamptz | None
    first_resolved_at: Timestamptz | None
    resolved_at: Timestamptz | None
    reopened_count: Integer
    status_durations: Jsonb
    suspected_gaps: Integer
    partial: Boolean
    events_count: Integer
    fold_state: Bytea


TABLE = Table.of("tickets", TicketRow, key="ticket_id", on_conflict="replace")


def row(state: TicketState) -> TicketRow:
    metrics = lifecycle(state.history)
    v: dict[str, Any] = state.values  # each key holds the type of its column
    fields = {
        k: {"name": name, "value": value}
        for k, (_, name, value) in sorted(state.custom_fields.items())
    }
    tags = sorted(tag for tag, (_, present) in state.tags.items() if present)
    return TicketRow(
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


def suspected_gaps(state: TicketState, events: Collection[str]) -> list[tuple[str, str]]:
    """The suspected gaps of `state` that involve one of `events` ("<type>:<source_id>").

    A gap is a pair of neighbours in the sorted status history; a pair of events stored before
    cannot become neighbours by an insertion, so the gaps a batch brought to light are exactly
    those that involve an event it appended (the worker logs them, see its report).
    """
    return [gap for gap in lifecycle(state.history).gaps if gap[0] in events or gap[1] in events]


PROJECTION: Projection[int, TicketState] = Projection(
    name="tickets",
    definition=TABLE,
    key=key,
    fold=fold,
    row=row,
    load_sql=TABLE.load_sql("ticket_id", "fold_state"),
    load=load,
)
