"""From UseDesk wire structs to domain events: the rules of `docs/usedesk-webhooks.md` §4.

Every builder takes a decoded envelope of its kind and returns the event, or raises
`DecodeError` naming the kind and the JSON path (a missing natural id, an unreadable date).
They read closed and tolerant envelopes alike, so a body decodes to the same event whichever
path it took (the form-vs-JSON property tests lean on that).

An id, status or rating of `0` or `""` means "none", as UseDesk's `"group": "0"` does (§4.1)
and as PHP writes null as text; so `x or None` normalises them (and costs no function call on
the hot path).

This is the worker's hot path (tests/benchmarks/decode.py), written for CPython's costs:
- every struct is built with its keyword arguments in the order its fields are declared:
  msgspec looks each name up from where the previous one was found, so an out-of-order call
  costs up to 2.5x more;
- never more than 15 keyword arguments in one call: CPython builds a dict for more, which
  makes the constructor 4x slower. Fields that are nearly always their default
  (`time_source`, `type_sent`, a top-level `assignee_id`) are set afterwards, only when they
  are not;
- a value that is already text is tested inline (`x.__class__ is str`) rather than through a
  call: nearly every value is, and a call per value was a third of the cost of these loops.
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
    INT64_MAX,
    ClientWire,
    ClosedFields,
    CommentWire,
    CsiWire,
    CustomFieldWire,
    Envelope,
    Int,
    Many,
    Reread,
    TicketWire,
    TriggerWire,
    text,
)

Visibility = Literal["public", "private"]
# "internal" is how the docs gloss "private" (§4.3); anything else is kept as unknown (None).
_VISIBILITY: dict[str, Visibility] = {
    "public": "public",
    "private": "private",
    "internal": "private",
}
_replace = msgspec.structs.replace


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
    published_text, updated_text = ticket.published_at, ticket.last_updated_at
    published_at = read_date(published_text, tz, kind, "ticket.published_at")
    last_updated_at = (
        published_at  # a new ticket's two dates are usually one string: parse it once
        if updated_text == published_text
        else read_date(updated_text, tz, kind, "ticket.last_updated_at")
    )
    occurred_at = published_at or last_updated_at
    ticket_id = ticket.id or _missing(ticket.id, kind, "ticket.id")
    subject, email, message = ticket.subject, ticket.email, ticket.message
    if subject.__class__ is not str and subject is not None:
        subject = _text_of(subject, kind, "ticket.subject", warnings)
    if email.__class__ is not str and email is not None:
        email = _text_of(email, kind, "ticket.email", warnings)
    if message.__class__ is not str and message is not None:
        message = _text_of(message, kind, "ticket.message", warnings)
    additional_id = ticket.additional_id
    if additional_id.__class__ is not str:
        additional_id = text(additional_id)
    # Custom fields and the client are found inside `ticket` or at the top level (§4.1): the
    # first that says something wins, because a form drops an empty part and the other one
    # would then show through.
    client = _client(ticket.client) or _client(envelope.client)
    event = TicketCreated(
        ticket_id=ticket_id,
        company_id=ticket.company_id or company_id,
        occurred_at=occurred_at or received_at,
        received_at=received_at,
        status_id=ticket.status_id or None,
        subject=subject,
        client_id=ticket.client_id or None,
        assignee_id=ticket.assignee_id or None,
        group_id=ticket.group or None,
        channel_id=ticket.channel_id or None,
        email=email,
        additional_id=additional_id,
        message=message,
        published_at=published_at,
        last_updated_at=last_updated_at,
    )
    return _replace(
        event,
        time_source="usedesk" if occurred_at else "received",
        custom_fields=_custom_fields(ticket.custom_fields)
        or _custom_fields(envelope.custom_fields),
        client=client,
        published_at_text=published_text or None,
        last_updated_at_text=updated_text or None,
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
    changed_text = trigger.changed_at
    changed_at = read_date(changed_text, tz, kind, "trigger.changed_at")
    data = trigger.data
    changes = _changes(data) if data else ()
    old_status, new_status = trigger.old_status or None, trigger.new_status or None
    if old_status is None or new_status is None:
        # C2's real-looking change event had no statuses at all (§4.2): use the data[] entry.
        old_fallback, new_fallback = _status_change(changes)
        old_status = old_status or old_fallback
        new_status = new_status or new_fallback
    user_id, rule_id = trigger.user_id or None, trigger.trigger_id or None
    ticket_id = trigger.ticket_id or _missing(trigger.ticket_id, kind, "trigger.ticket_id")
    change_id = trigger.id or _missing(trigger.id, kind, "trigger.id")
    fields = envelope.custom_fields
    event = TicketChanged(
        ticket_id=ticket_id,
        company_id=trigger.company_id or company_id,
        occurred_at=changed_at or received_at,
        received_at=received_at,
        change_id=change_id,
        changes=changes,
        old_status=old_status,
        new_status=new_status,
        user_id=user_id,
        rule_id=rule_id,
        changed_by="user" if user_id else "rule" if rule_id else "unknown",
        changed_at=changed_at,
        custom_fields=_custom_fields(fields) if fields else (),
        changed_at_text=changed_text or None,
        client=_client(envelope.client),
    )
    assignee_id = envelope.assignee_id or None
    if changed_at is None or assignee_id is not None:
        return _replace(
            event,
            time_source="usedesk" if changed_at else "received",
            assignee_id=assignee_id,
        )
    return event


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
    published_text = comment.published_at
    published_at = read_date(published_text, tz, kind, "comment.published_at")
    type_sent = comment.type
    if type_sent.__class__ is not str and type_sent is not None:
        type_sent = _text_of(type_sent, kind, "comment.type", warnings)
    visibility = _VISIBILITY.get(type_sent or "")
    ticket_id = comment.ticket_id or _missing(comment.ticket_id, kind, "comment.ticket_id")
    comment_id = comment.id or _missing(comment.id, kind, "comment.id")
    message, author = comment.message, comment.from_
    if message.__class__ is not str and message is not None:
        message = _text_of(message, kind, "comment.message", warnings)
    if author.__class__ is not str and author is not None:
        author = _text_of(author, kind, "comment.from", warnings)
    fields = envelope.custom_fields
    event = CommentCreated(
        ticket_id=ticket_id,
        company_id=comment.company_id or company_id,
        occurred_at=published_at or received_at,
        received_at=received_at,
        comment_id=comment_id,
        message=message,
        visibility=visibility,
        author=author,
        user_id=comment.user_id or None,
        client_id=comment.client_id or None,
        is_first=bool(comment.is_first),
        published_at=published_at,
        published_at_text=published_text or None,
        custom_fields=_custom_fields(fields) if fields else (),
        client=_client(envelope.client),
    )
    file, files, assignee_id = comment.file, comment.files, envelope.assignee_id or None
    if (
        published_at is None
        or visibility is None
        or file is not None
        or files is not None
        or assignee_id is not None
    ):
        return _replace(
            event,
            time_source="usedesk" if published_at else "received",
            # An unknown visibility is kept as sent, never guessed (§4.3).
            type_sent=type_sent if visibility is None else None,
            files_json=_json_of(file, files),
            assignee_id=assignee_id,
        )
    return event


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
    created_text, updated_text = csi.created_at, csi.updated_at
    created_at = read_date(created_text, tz, kind, "csi.created_at")
    updated_at = (
        created_at  # a first rating's two dates are one string: parse it once
        if updated_text == created_text
        else read_date(updated_text, tz, kind, "csi.updated_at")
    )
    occurred_at = updated_at or created_at
    ticket_id = csi.ticket_id or _missing(csi.ticket_id, kind, "csi.ticket_id")
    rating_id = csi.id or _missing(csi.id, kind, "csi.id")
    comment = csi.comment
    if comment.__class__ is not str:
        comment = text(comment)
    return RatingGiven(
        ticket_id=ticket_id,
        company_id=csi.company_id or company_id,
        occurred_at=occurred_at or received_at,
        time_source="usedesk" if occurred_at else "received",
        received_at=received_at,
        rating_id=rating_id,
        rating=csi.rating or None,
        comment=comment,
        client_id=csi.client_id or None,
        user_id=csi.user_id or None,
        ticket_comment_id=csi.ticket_comment_id or None,
        created_at=created_at,
        updated_at=updated_at,
        created_at_text=created_text or None,
        updated_at_text=updated_text or None,
    )


def _text_of(value: Any, kind: str, path: str, warnings: list[str] | None) -> str | None:
    """A text field as text: a number or a flag where text belongs is kept as its text, with a
    warning on the delivery, rather than costing the whole webhook (docs/semantics.md)."""
    if value is None or value.__class__ is str:
        return value
    kept = text(value) or None
    if warnings is not None:
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


def _changes(data: Many[dict[str, Any]]) -> tuple[FieldChange, ...]:
    changes = []
    for entry in data if data.__class__ is list else _values(data):
        if entry.__class__ is not dict:
            continue
        target, value, old = entry.get("target"), entry.get("value"), entry.get("old_value")
        # The common entry: its three keys and nothing else, each text (or a null value).
        if (
            target.__class__ is str
            and (value.__class__ is str or value is None)
            and (old.__class__ is str or old is None)
            and len(entry) == 3
            and "value" in entry
            and "old_value" in entry
        ):
            changes.append(FieldChange(target=target, value=value, old_value=old))
            continue
        change = _change(entry, target, value, old)
        if change is not None:
            changes.append(change)
    return tuple(changes)


def _change(entry: dict[str, Any], target: Any, value: Any, old: Any) -> FieldChange | None:
    """Any other `data[]` entry: what text would lose is kept beside it."""
    value_text = value if value.__class__ is str else text(value)
    old_text = old if old.__class__ is str else text(old)
    target_text = target if target.__class__ is str else text(target)
    # A form omits an entry that has only nulls, so one sent in JSON is dropped too.
    if target_text is None and value_text is None and old_text is None:
        return None
    if _CHANGE_KEYS.issuperset(entry) and not _typed(value) and not _typed(old):
        return FieldChange(target=target_text or "", value=value_text, old_value=old_text)
    return FieldChange(
        target=target_text or "",
        value=value_text,
        old_value=old_text,
        value_json=_JSON.encode(value).decode() if _typed(value) else None,
        old_value_json=_JSON.encode(old).decode() if _typed(old) else None,
        extra={k: _scalar(v) for k, v in entry.items() if k not in _CHANGE_KEYS},
    )


_CHANGE_KEYS = frozenset({"target", "value", "old_value"})
_JSON = msgspec.json.Encoder(order="deterministic")


def _values(many: Any) -> list[Any]:
    """The elements of an array that arrived as a PHP sparse-array object (`{"1": …}`)."""
    return list(many.values()) if many.__class__ is dict else list(many)


def _typed(value: Any) -> bool:
    """A value whose JSON type text would lose: anything but a string or null."""
    return value is not None and value.__class__ is not str


def _scalar(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return _JSON.encode(value).decode()


def _custom_fields(fields: Many[CustomFieldWire] | ClosedFields) -> tuple[CustomField, ...]:
    if not fields:
        return ()
    if fields.__class__ is tuple:  # decoded by the closed envelope: check, never rebuild
        return _checked(fields)
    out = []
    for field in fields if fields.__class__ is list else _values(fields):
        if field.__class__ is CustomField:  # a closed envelope's sparse array
            return _checked(tuple(_values(fields)))
        name, value = field.name, field.value
        if name.__class__ is not str and name is not None:
            name = text(name)
        if value.__class__ is not str and value is not None:
            value = text(value)
        field_id = field.id or None
        if field_id is None and name is None and value is None:
            continue
        out.append(CustomField(id=field_id, name=name, value=value))
    return tuple(out)


def _checked(fields: tuple[CustomField, ...]) -> tuple[CustomField, ...]:
    """Custom fields as the closed envelope decoded them, if the wire types would have read
    them alike: an id from 1 to 2^63-1 or none, and something in every field."""
    for field in fields:
        field_id = field.id
        if field_id is None:
            if field.name is None and field.value is None:
                raise Reread
        elif not 0 < field_id <= INT64_MAX:
            raise Reread
    return fields


def _client(wire: ClientWire | None) -> ClientRef | None:  # noqa: C901, PLR0912 - hot path
    """The client as `ClientRef`. Its three lists are read by loops written out here: a helper
    call per list was a fifth of this function, run for three webhooks in four."""
    if wire is None:
        return None
    client_id, name, note = wire.id or None, wire.name, wire.note
    if name.__class__ is not str and name is not None:
        name = text(name)
    if note.__class__ is not str and note is not None:
        note = text(note)
    value: Any
    emails: Any = wire.emails
    if emails:
        kept = []
        for entry in emails if emails.__class__ is list else _values(emails):
            value = entry if entry.__class__ is str else entry.email
            if value.__class__ is not str:
                value = text(value)
            if value:  # empty ones (a phone of "") are dropped
                kept.append(value)
        emails = tuple(kept)
    else:
        emails = ()
    phones: Any = wire.phones
    phone_types: tuple[str | None, ...] = ()
    if phones:
        # Non-empty phones and, in the same order, their types (None for a bare string).
        numbers, types = [], []
        for entry in phones if phones.__class__ is list else _values(phones):
            if entry.__class__ is str:
                value, kind = entry, None
            else:
                value, kind = entry.phone, entry.type
                if value.__class__ is not str:
                    value = text(value)
                if kind.__class__ is not str and kind is not None:
                    kind = text(kind)
            if value:
                numbers.append(value)
                types.append(kind)
        phones, phone_types = tuple(numbers), tuple(types)
    else:
        phones = ()
    additional: Any = wire.additional_ids
    if additional:
        kept = []
        for entry in additional if additional.__class__ is list else _values(additional):
            value = entry if entry.__class__ is str else entry.value
            if value.__class__ is not str:
                value = text(value)
            if value:
                kept.append(value)
        additional = tuple(kept)
    else:
        additional = ()
    # A client with nothing in it is what a form sends as no client at all (it omits empties).
    if not (client_id or name or emails or phones or note or additional):
        return None
    return ClientRef(
        id=client_id,
        name=name,
        emails=emails,
        phones=phones,
        phone_types=phone_types,
        note=note or None,
        additional_ids=additional,
    )
