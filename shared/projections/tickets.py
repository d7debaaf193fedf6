"""`tickets`: one row per ticket, from its creation, changes, comments and ratings.

Every value carries the version of the event that set it and is replaced only by a newer one,
so a change that arrives before its ticket's creation makes a partial row which the creation
then completes without overwriting the newer values (I5). Versions follow UseDesk's order of
events (docs/semantics.md): the creation first (`CREATED`), then the changes by their change
id (`change_version`), which UseDesk hands out in the order changes happen; a change's date
never decides its place. Ratings are versioned by their own `updated_at`.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Collection
from datetime import datetime
from itertools import pairwise
from typing import Any, NamedTuple

import asyncpg
import msgspec
import structlog

from shared.events import (
    CommentCreated,
    CustomField,
    Event,
    FieldChange,
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

log = structlog.get_logger()

Scalar = int | str | None
CREATED = "0"
# The fold state's format: a state stored by an older DeskLedger (another version scheme) is
# folded on correctly only after `deskledger replay` (docs/operations.md, upgrading).
FOLD_FORMAT = 2
# Fields whose `old_value` in a change is checked against the value before it (a lost change
# shows up as a contradiction), as the status is.
GAP_FIELDS = ("assignee_id", "group_id", "subject")


def change_version(change_id: int) -> str:
    """The version of change `change_id`: after the creation, in UseDesk's order of changes."""
    return f"1.{change_id:020d}"


class FieldEntry(msgspec.Struct, array_like=True, frozen=True):
    """One value of a field in its history: who set it (`event`), from what, to what."""

    stamp: str
    old: str | None
    new: str | None
    event: str


class TicketState(msgspec.Struct, kw_only=True):
    ticket_id: int
    format: int = 0
    created: bool = False
    values: dict[str, Scalar] = {}
    published_at: datetime | None = None
    versions: dict[str, str] = {}
    # field id -> [version, unused, value]; field id -> [version, name]
    custom_fields: dict[str, tuple[str, str | None, str | None]] = {}
    custom_field_names: dict[str, tuple[str, str]] = {}
    # tag -> [version, present]
    tags: dict[str, tuple[str, bool]] = {}
    history: list[StatusEntry] = []
    # GAP_FIELDS -> their values in version order, for suspected gaps
    field_history: dict[str, list[FieldEntry]] = {}
    comments_count: int = 0
    # The client's first comment, whether an agent opened the ticket (outbound), and every
    # public agent comment: first_response_at is derived from them (docs/semantics.md).
    client_first_at: datetime | None = None
    outbound: bool = False
    agent_replies: list[datetime] = []
    last_updated_at: datetime | None = None
    rating: int | None = None
    events_count: int = 0


# Deterministic: the same set of events gives the same bytes, whatever their arrival order.
_encoder = msgspec.json.Encoder(order="deterministic")
# The fold's own state is stored as MessagePack, not jsonb: nothing queries it, and every batch
# rewrites and rereads it, which as jsonb cost a JSON parse on write and a text rendering on read.
_state_encoder = msgspec.msgpack.Encoder(order="deterministic")
_state_decoder = msgspec.msgpack.Decoder(TicketState)
# The `custom_fields` column as the load reads it back: {"<field id>": {"value": ...}}.
_fields_decoder = msgspec.json.Decoder(dict[str, dict[str, Any]])


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


def _custom_field(
    state: TicketState, field_id: str, name: str | None, value: str | None, version: str
) -> None:
    current = state.custom_fields.get(field_id)
    if current is None or current[0] < version:
        state.custom_fields[field_id] = (version, None, value)
    # The name is versioned apart: a change names a field by id only, and must neither erase
    # the name an earlier event gave it nor hide it when it arrives first.
    named = state.custom_field_names.get(field_id)
    if name is not None and (named is None or named[0] < version):
        state.custom_field_names[field_id] = (version, name)


def _custom_fields(state: TicketState, fields: tuple[CustomField, ...], version: str) -> None:
    for field in fields:
        if field.id is not None:
            _custom_field(state, str(field.id), field.name, field.value, version)


def _int_or_none(text: str | None) -> int | None:
    if text is None or not text.strip().lstrip("-").isdigit():
        return None
    value = int(text)
    return value or None  # UseDesk says "0" for "no group" / "nobody"


def _as_text(value: Scalar) -> str | None:
    """A field's value as a change's `old_value` would spell it ("0" and "" mean none)."""
    if value is None:
        return None
    text = str(value)
    return None if text in ("", "0") else text


def _tag_names(text: str | None, sent_json: str | None) -> list[str]:
    """Tags of a `new_tags`/`removed_tags` entry: a JSON array as sent, else comma-separated."""
    if sent_json is not None and sent_json.startswith("["):
        names = json.loads(sent_json)
        return [str(name).strip() for name in names if str(name).strip()]
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _tags(state: TicketState, names: list[str], present: bool, version: str) -> None:
    for tag in names:
        if tag not in state.tags or state.tags[tag][0] < version:
            state.tags[tag] = (version, present)


def _history(state: TicketState, entry: StatusEntry) -> None:
    """Keep the history sorted by version, so the stored state does not depend on arrival order."""
    if all(existing.stamp != entry.stamp for existing in state.history):
        bisect.insort(state.history, entry, key=lambda e: e.stamp)


def _field_history(state: TicketState, field: str, entry: FieldEntry) -> None:
    entries = state.field_history.setdefault(field, [])
    if all(existing.stamp != entry.stamp for existing in entries):
        bisect.insort(entries, entry, key=lambda e: e.stamp)


def _created(state: TicketState, event: TicketCreated) -> None:
    state.created = True
    name = f"{event.type}:{event.source_id}"
    for field in (
        "company_id",
        "subject",
        "client_id",
        "assignee_id",
        "group_id",
        "channel_id",
        "email",
    ):
        value = getattr(event, field)
        _set(state, field, value, CREATED)
        if field in GAP_FIELDS:
            _field_history(state, field, FieldEntry(CREATED, None, _as_text(value), name))
    if _newer(state, "published_at", CREATED):
        state.published_at = event.published_at or event.occurred_at
    _custom_fields(state, event.custom_fields, CREATED)
    state.last_updated_at = _later(
        state.last_updated_at, event.last_updated_at or event.occurred_at
    )
    if event.status_id is not None:
        at = event.published_at or event.occurred_at
        dated = event.time_source == "usedesk"
        _history(state, StatusEntry(CREATED, at, None, event.status_id, name, dated))


# data[] targets that set a column of `tickets`, and the column.
_ID_TARGETS = {"assignee_id": "assignee_id", "group": "group_id", "group_id": "group_id"}
_TEXT_TARGETS = {"subject": "subject", "priority": "priority"}
# Keys of a `ticket_field` entry that may name the field (undocumented, docs/semantics.md).
_FIELD_ID_KEYS = ("field_id", "ticket_field_id", "id")


def _change(state: TicketState, change: FieldChange, version: str, name: str) -> None:
    target = change.target
    if target in _ID_TARGETS:
        column = _ID_TARGETS[target]
        _set(state, column, _int_or_none(change.value), version)
        entry = FieldEntry(version, _as_text(change.old_value), _as_text(change.value), name)
        _field_history(state, column, entry)
    elif target in _TEXT_TARGETS:
        column = _TEXT_TARGETS[target]
        _set(state, column, change.value, version)
        if column in GAP_FIELDS:
            _field_history(state, column, FieldEntry(version, change.old_value, change.value, name))
    elif target in ("new_tags", "removed_tags"):
        names = _tag_names(change.value, change.value_json)
        _tags(state, names, target == "new_tags", version)
    elif target == "ticket_field":
        field_id = next((change.extra[k] for k in _FIELD_ID_KEYS if change.extra.get(k)), None)
        if field_id is not None:
            _custom_field(state, str(field_id), None, change.value, version)


def _changed(state: TicketState, event: TicketChanged) -> None:
    version = change_version(event.change_id)
    name = f"{event.type}:{event.source_id}"
    if event.company_id is not None:
        _set(state, "company_id", event.company_id, version)
    for change in event.changes:
        _change(state, change, version, name)
    _custom_fields(state, event.custom_fields, version)
    state.last_updated_at = _later(state.last_updated_at, event.occurred_at)
    if event.new_status is not None:
        dated = event.time_source == "usedesk"
        entry = StatusEntry(
            version, event.occurred_at, event.old_status, event.new_status, name, dated
        )
        _history(state, entry)


def _commented(state: TicketState, event: CommentCreated) -> None:
    state.comments_count += 1
    at = event.published_at or event.occurred_at
    side = event.side
    if side == "client":
        first = state.client_first_at
        state.client_first_at = at if first is None or at < first else first
    elif side == "user":
        if event.is_first:
            state.outbound = True  # the agent opened the ticket: its message is no response
        elif event.visibility == "public":
            bisect.insort(state.agent_replies, at)
    state.last_updated_at = _later(state.last_updated_at, at)


def _rated(state: TicketState, event: RatingGiven) -> None:
    version = stamp(event.updated_at or event.occurred_at, event.type, event.rating_id)
    if _newer(state, "rating", version):
        state.rating = event.rating


def fold(state: TicketState | None, stored: StoredEvent) -> TicketState:
    event = stored.event
    if state is None:
        state = TicketState(ticket_id=event.ticket_id, format=FOLD_FORMAT)
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
    priority: Text | None


# A ticket's custom fields change rarely, and its row is rewritten for every batch that touches
# it: the stored (out-of-line) value is kept when equal (migration 0007).
TABLE = Table.of(
    "tickets", TicketRow, key="ticket_id", on_conflict="replace", keep_equal=("custom_fields",)
)


def first_response_at(state: TicketState) -> datetime | None:
    """The first public agent comment at or after the client's first message: their first
    comment, or the ticket's creation unless an agent opened it (docs/semantics.md)."""
    starts = [state.client_first_at]
    if state.created and not state.outbound:
        starts.append(state.published_at)
    known = [start for start in starts if start is not None]
    if not known:
        return None
    index = bisect.bisect_left(state.agent_replies, min(known))
    return state.agent_replies[index] if index < len(state.agent_replies) else None


def field_gaps(state: TicketState) -> list[tuple[str, str, str]]:
    """(field, previous event, event) where a change's `old_value` of a field is not the value
    the events before it left."""
    gaps = []
    for field, entries in sorted(state.field_history.items()):
        for previous, entry in pairwise(entries):
            if entry.old is not None and entry.old != previous.new:
                gaps.append((field, previous.event, entry.event))
    return gaps


def row(state: TicketState) -> TicketRow:
    metrics = lifecycle(state.history)
    v: dict[str, Any] = state.values  # each key holds the type of its column
    names = state.custom_field_names
    fields = {
        k: {"name": names[k][1] if k in names else None, "value": value}
        for k, (_, _, value) in sorted(state.custom_fields.items())
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
        first_response_at(state),
        metrics.first_resolved_at,
        metrics.resolved_at,
        metrics.reopened_count,
        _encoder.encode(metrics.status_durations).decode(),
        len(metrics.gaps) + len(field_gaps(state)),
        not state.created,
        state.events_count,
        _stored_state(state),
        v.get("priority"),
    )


def _stored_state(state: TicketState) -> bytes:
    """`fold_state` without the custom fields' values: the row's `custom_fields` column holds
    each of them already, and `load` puts them back from it. A free-text field (a description)
    made them most of the state, written twice into every rewrite of the row (issue 18)."""
    if not any(value is not None for _, _, value in state.custom_fields.values()):
        return _state_encoder.encode(state)
    versions = {k: (version, None, None) for k, (version, _, _) in state.custom_fields.items()}
    return _state_encoder.encode(msgspec.structs.replace(state, custom_fields=versions))


_warned_old_format = False


def load(record: asyncpg.Record) -> tuple[int, TicketState]:
    """A stored row's state: `fold_state` with its custom fields' values from the row's
    `custom_fields` (see `_stored_state`; a state stored with its values gets the same ones)."""
    global _warned_old_format  # noqa: PLW0603 - one warning per process, not per row
    state = _state_decoder.decode(record["fold_state"])
    if state.custom_fields:
        values = _fields_decoder.decode(record["custom_fields"])
        state.custom_fields = {
            k: (version, None, values.get(k, {}).get("value"))
            for k, (version, _, _) in state.custom_fields.items()
        }
    if state.format < FOLD_FORMAT and not _warned_old_format:
        _warned_old_format = True
        log.warning(
            "projection_built_by_older_version",
            ticket_id=state.ticket_id,
            hint="run `deskledger replay` once after this upgrade (docs/operations.md)",
        )
    return record["ticket_id"], state


def suspected_gaps(state: TicketState, events: Collection[str]) -> list[tuple[str, str, str]]:
    """The suspected gaps of `state` that involve one of `events` ("<type>:<source_id>"), as
    (field, previous event, event); the field is `status_id` for a status gap.

    A gap is a pair of neighbours in an ordered history; a pair of events stored before cannot
    become neighbours by an insertion, so the gaps a batch brought to light are exactly those
    that involve an event it appended (the worker logs them, see its report).
    """
    gaps = [("status_id", *gap) for gap in lifecycle(state.history).gaps]
    gaps += field_gaps(state)
    return [gap for gap in gaps if gap[1] in events or gap[2] in events]


PROJECTION: Projection[int, TicketState] = Projection(
    name="tickets",
    definition=TABLE,
    key=key,
    fold=fold,
    row=row,
    load_sql=TABLE.load_sql("ticket_id", "fold_state", "custom_fields"),
    load=load,
)
