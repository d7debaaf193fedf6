"""From UseDesk wire structs to domain events: the rules of `docs/usedesk-webhooks.md` §4.

Every builder takes a decoded envelope of its kind and returns the event, or raises
`DecodeError` naming the kind and the JSON path (a missing natural id, an unreadable date).
They read closed and tolerant envelopes alike, so a body decodes to the same event whichever
path it took (the form-vs-JSON property tests lean on that).

An id, status or rating of `0` or `""` means "none", as UseDesk's `"group": "0"` does (§4.1)
and as PHP writes null as text; so `x or None` normalises them (and costs no function call on
the hot path).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NoReturn
from zoneinfo import ZoneInfo

import msgspec

from shared.errors import DecodeError
from shared.events import (
    ClientRef,
    CommentCreated,
    CustomField,
    FieldChange,
    RatingGiven,
    TicketChanged,
    TicketCreated,
)
from shared.usedesk.dates import read_date
from shared.usedesk.errors import show
from shared.usedesk.wire import (
    INT32_MAX,
    ClientWire,
    CommentWire,
    CsiWire,
    CustomFieldWire,
    Envelope,
    Int,
    Many,
    PhoneWire,
    TicketWire,
    TriggerWire,
    items,
    text,
)

Visibility = Literal["public", "private"]
# "internal" is how the docs gloss "private" (§4.3); anything else is kept as unknown (None).
_VISIBILITY: dict[str, Visibility] = {
    "public": "public",
    "private": "private",
    "internal": "private",
}


def ticket_created(
    envelope: Envelope,
    received_at: datetime,
    tz: ZoneInfo,
    company_id: int | None,
    warnings: list[str] | None = None,
) -> TicketCreated:
    kind = "ticket_created"
    ticket = envelope.ticket
    if not isinstance(ticket, TicketWire):
        raise DecodeError(kind, "ticket", "expected an object, got null")
    notes = warnings if warnings is not None else []
    published_at = read_date(ticket.published_at, tz, kind, "ticket.published_at")
    last_updated_at = (
        published_at  # a new ticket's two dates are usually one string: parse it once
        if ticket.last_updated_at == ticket.published_at
        else read_date(ticket.last_updated_at, tz, kind, "ticket.last_updated_at")
    )
    occurred_at = published_at or last_updated_at
    event = TicketCreated(
        ticket_id=ticket.id or _missing(ticket.id, kind, "ticket.id"),
        company_id=ticket.company_id or company_id,
        occurred_at=occurred_at or received_at,
        time_source="usedesk" if occurred_at else "received",
        status_id=ticket.status_id or None,
        subject=_text_of(ticket.subject, kind, "ticket.subject", notes),
        client_id=ticket.client_id or None,
        assignee_id=ticket.assignee_id or None,
        group_id=ticket.group or None,
        channel_id=ticket.channel_id or None,
        email=_text_of(ticket.email, kind, "ticket.email", notes),
        additional_id=text(ticket.additional_id),
        message=_text_of(ticket.message, kind, "ticket.message", notes),
        published_at=published_at,
        last_updated_at=last_updated_at,
    )
    # These are set apart because CPython compiles a call with more than 15 keyword arguments
    # into one that builds a dict first, which makes the constructor 4x slower.
    # Custom fields and the client are found inside `ticket` or at the top level (§4.1): the
    # first that says something wins, because a form drops an empty part and the other one
    # would then show through.
    return msgspec.structs.replace(
        event,
        custom_fields=_custom_fields(ticket.custom_fields)
        or _custom_fields(envelope.custom_fields),
        client=_client(ticket.client) or _client(envelope.client),
        received_at=received_at,
        published_at_text=ticket.published_at or None,
        last_updated_at_text=ticket.last_updated_at or None,
    )


def ticket_changed(
    envelope: Envelope,
    received_at: datetime,
    tz: ZoneInfo,
    company_id: int | None,
    warnings: list[str] | None = None,
) -> TicketChanged:
    kind = "ticket_changed"
    trigger = envelope.trigger
    if not isinstance(trigger, TriggerWire):
        raise DecodeError(kind, "trigger", "expected an object, got null")
    changed_at = read_date(trigger.changed_at, tz, kind, "trigger.changed_at")
    changes = _changes(trigger.data)
    old_status, new_status = trigger.old_status or None, trigger.new_status or None
    if old_status is None or new_status is None:
        # C2's real-looking change event had no statuses at all (§4.2): use the data[] entry.
        old_fallback, new_fallback = _status_change(changes)
        old_status = old_status or old_fallback
        new_status = new_status or new_fallback
    user_id, rule_id = trigger.user_id or None, trigger.trigger_id or None
    event = TicketChanged(
        ticket_id=trigger.ticket_id or _missing(trigger.ticket_id, kind, "trigger.ticket_id"),
        change_id=trigger.id or _missing(trigger.id, kind, "trigger.id"),
        company_id=trigger.company_id or company_id,
        occurred_at=changed_at or received_at,
        time_source="usedesk" if changed_at else "received",
        received_at=received_at,
        changes=changes,
        old_status=old_status,
        new_status=new_status,
        user_id=user_id,
        rule_id=rule_id,
        changed_by="user" if user_id else "rule" if rule_id else "unknown",
        changed_at=changed_at,
        changed_at_text=trigger.changed_at or None,
    )
    return msgspec.structs.replace(
        event,
        custom_fields=_custom_fields(envelope.custom_fields),
        assignee_id=envelope.assignee_id or None,
        client=_client(envelope.client),
    )


def comment_created(
    envelope: Envelope,
    received_at: datetime,
    tz: ZoneInfo,
    company_id: int | None,
    warnings: list[str] | None = None,
) -> CommentCreated:
    kind = "comment_created"
    comment = envelope.comment
    if not isinstance(comment, CommentWire):
        raise DecodeError(kind, "comment", "expected an object, got null")
    notes = warnings if warnings is not None else []
    published_at = read_date(comment.published_at, tz, kind, "comment.published_at")
    type_sent = _text_of(comment.type, kind, "comment.type", notes)
    visibility = _VISIBILITY.get(type_sent or "")
    event = CommentCreated(
        ticket_id=comment.ticket_id or _missing(comment.ticket_id, kind, "comment.ticket_id"),
        comment_id=comment.id or _missing(comment.id, kind, "comment.id"),
        company_id=comment.company_id or company_id,
        occurred_at=published_at or received_at,
        time_source="usedesk" if published_at else "received",
        received_at=received_at,
        message=_text_of(comment.message, kind, "comment.message", notes),
        visibility=visibility,
        author=_text_of(comment.from_, kind, "comment.from", notes),
        user_id=comment.user_id or None,
        client_id=comment.client_id or None,
        is_first=bool(comment.is_first),
        published_at=published_at,
        published_at_text=comment.published_at or None,
    )
    return msgspec.structs.replace(
        event,
        # An unknown visibility is kept as sent, never guessed (§4.3).
        type_sent=type_sent if visibility is None else None,
        custom_fields=_custom_fields(envelope.custom_fields),
        files_json=_json_of(comment.file, comment.files),
        assignee_id=envelope.assignee_id or None,
        client=_client(envelope.client),
    )


def rating_given(
    envelope: Envelope,
    received_at: datetime,
    tz: ZoneInfo,
    company_id: int | None,
    warnings: list[str] | None = None,
) -> RatingGiven:
    kind = "rating"
    csi = envelope.csi
    if not isinstance(csi, CsiWire):
        raise DecodeError(kind, "csi", "expected an object, got null")
    created_at = read_date(csi.created_at, tz, kind, "csi.created_at")
    updated_at = (
        created_at  # a first rating's two dates are one string: parse it once
        if csi.updated_at == csi.created_at
        else read_date(csi.updated_at, tz, kind, "csi.updated_at")
    )
    occurred_at = updated_at or created_at
    return RatingGiven(
        ticket_id=csi.ticket_id or _missing(csi.ticket_id, kind, "csi.ticket_id"),
        rating_id=csi.id or _missing(csi.id, kind, "csi.id"),
        company_id=csi.company_id or company_id,
        occurred_at=occurred_at or received_at,
        time_source="usedesk" if occurred_at else "received",
        received_at=received_at,
        rating=csi.rating or None,
        comment=text(csi.comment),
        client_id=csi.client_id or None,
        user_id=csi.user_id or None,
        ticket_comment_id=csi.ticket_comment_id or None,
        created_at=created_at,
        updated_at=updated_at,
        created_at_text=csi.created_at or None,
        updated_at_text=csi.updated_at or None,
    )


def _text_of(value: Any, kind: str, path: str, warnings: list[str]) -> str | None:
    """A text field as text: a number or a flag where text belongs is kept as its text, with a
    warning on the delivery, rather than costing the whole webhook (docs/semantics.md)."""
    if value is None or value.__class__ is str:
        return value
    kept = text(value) or None
    warnings.append(f"{kind}: {path}: expected text, got {show(value)}; kept as {show(kept)}")
    return kept


def _json_of(*values: Any) -> str | None:
    present = [value for value in values if value is not None]
    if not present:
        return None
    return _JSON.encode(present[0] if len(present) == 1 else present).decode()


def _missing(value: Int, kind: str, path: str) -> NoReturn:
    got = "nothing" if value is None else show(value)
    raise DecodeError(kind, path, f"required, got {got}")


def _status_change(changes: tuple[FieldChange, ...]) -> tuple[int | None, int | None]:
    for change in changes:
        if change.target == "status_id":
            return _numeric(change.old_value), _numeric(change.value)
    return None, None


def _numeric(value: str | None) -> int | None:
    """A status id from a `data[]` entry's text; None unless it fits the 32-bit status columns."""
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 10:
        return None
    number = int(value)
    return number if 0 < number <= INT32_MAX else None


# The loops below test for text before calling `text()`: nearly every value is already a
# string, and a call per value was a third of their cost.


def _changes(data: Many[dict[str, Any]]) -> tuple[FieldChange, ...]:
    changes = []
    for entry in items(data):
        if entry.__class__ is not dict:
            continue
        target, value, old = entry.get("target"), entry.get("value"), entry.get("old_value")
        value_text = value if value.__class__ is str else text(value)
        old_text = old if old.__class__ is str else text(old)
        target_text = target if target.__class__ is str else text(target)
        # A form omits an entry that has only nulls, so one sent in JSON is dropped too.
        if target_text is None and value_text is None and old_text is None:
            continue
        change = FieldChange(target=target_text or "", value=value_text, old_value=old_text)
        if not _CHANGE_KEYS.issuperset(entry) or _typed(value) or _typed(old):
            change = msgspec.structs.replace(
                change,
                value_json=_JSON.encode(value).decode() if _typed(value) else None,
                old_value_json=_JSON.encode(old).decode() if _typed(old) else None,
                extra={k: _scalar(v) for k, v in entry.items() if k not in _CHANGE_KEYS},
            )
        changes.append(change)
    return tuple(changes)


_CHANGE_KEYS = frozenset({"target", "value", "old_value"})
_JSON = msgspec.json.Encoder(order="deterministic")


def _typed(value: Any) -> bool:
    """A value whose JSON type text would lose: anything but a string or null."""
    return value is not None and value.__class__ is not str


def _scalar(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return _JSON.encode(value).decode()


def _custom_fields(fields: Many[CustomFieldWire]) -> tuple[CustomField, ...]:
    if not fields:
        return ()
    out = []
    for field in items(fields):
        field_id, name, value = field.id or None, field.name, field.value
        if name.__class__ is not str:
            name = text(name)
        if value.__class__ is not str:
            value = text(value)
        if field_id is None and name is None and value is None:
            continue
        out.append(CustomField(id=field_id, name=name, value=value))
    return tuple(out)


def _client(wire: ClientWire | None) -> ClientRef | None:
    if wire is None:
        return None
    client_id, name, note = wire.id or None, wire.name, wire.note
    if name.__class__ is not str:
        name = text(name)
    if note.__class__ is not str:
        note = text(note)
    emails = _contacts(wire.emails, "email") if wire.emails else ()
    phones, phone_types = _phones(wire.phones) if wire.phones else ((), ())
    additional_ids = _contacts(wire.additional_ids, "value") if wire.additional_ids else ()
    # A client with nothing in it is what a form sends as no client at all (it omits empties).
    if not (client_id or name or emails or phones or note or additional_ids):
        return None
    return ClientRef(
        id=client_id,
        name=name,
        emails=emails,
        phones=phones,
        phone_types=phone_types,
        note=note or None,
        additional_ids=additional_ids,
    )


def _phones(
    entries: Many[PhoneWire | str],
) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    """Non-empty phones and, in the same order, their types (None for a bare string)."""
    phones: list[str] = []
    types: list[str | None] = []
    for entry in items(entries):
        phone: str | None
        if isinstance(entry, str):
            phone, kind = entry, None
        else:
            phone, kind = text(entry.phone), text(entry.type)
        if phone:
            phones.append(phone)
            types.append(kind)
    return tuple(phones), tuple(types)


def _contacts(entries: Many[Any], field: str) -> tuple[str, ...]:
    """`[{"email": "a@b"}]` → `("a@b",)`; empty ones (a phone of `""`) are dropped."""
    kept = []
    for entry in items(entries):
        value = entry if entry.__class__ is str else getattr(entry, field)
        if value.__class__ is not str:
            value = text(value)
        if value:
            kept.append(value)
    return tuple(kept)
