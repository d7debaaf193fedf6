"""UseDesk webhook payloads as sent: tolerant msgspec structs, decoded in one pass.

Tolerant means: unknown fields are ignored; every field but a kind's natural id may be missing
or null (checked when the event is built, not here); ids, statuses and flags come as ints or
numeric strings (decoded with `strict=False`); arrays may come as objects, because PHP's
`json_encode` turns a sparse array into `{"1": …, "3": …}`. See `docs/usedesk-webhooks.md` §3.

`secret` and `custom_blocks` (with its `secret_key`) are deliberately not fields: no event
carries them, skipping them is cheaper than decoding them, and what is never materialised
cannot leak into an event or a log (reliability I7).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias, TypeVar

import msgspec

T = TypeVar("T")

# `""` is what PHP makes of a null or false cast to text; it means "no value", not an error.
Int: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | Literal[""] | None
Flag: TypeAlias = bool | int | Literal[""] | None
# Text some senders type as a number (`additional_id` in chat payloads, phone numbers); any
# JSON is accepted and turned into text later, so an odd value never costs the whole event.
Text: TypeAlias = Any
# Dates stay text here: the zone is applied when the event is built, and PHP's "no date"
# (`""`, `0000-00-00 00:00:00`) must not fail the whole payload.
Date: TypeAlias = str | None
Many: TypeAlias = list[T] | dict[str, T] | None


class _Wire(msgspec.Struct, kw_only=True, gc=False):
    """Base of the wire structs: no cycles are possible in decoded data, so skip the GC."""


class CustomFieldWire(_Wire):
    id: Int = None
    name: Text = None
    value: Any = None


class EmailWire(_Wire):
    email: Text = None


class PhoneWire(_Wire):
    phone: Text = None
    type: str | None = None


class ClientWire(_Wire):
    id: Int = None
    name: str | None = None
    emails: Many[EmailWire | str] = None
    phones: Many[PhoneWire | str] = None


class TicketWire(_Wire):
    id: Int = None
    status_id: Int = None
    subject: str | None = None
    client_id: Int = None
    assignee_id: Int = None
    group: Int = None
    channel_id: Int = None
    email: str | None = None
    additional_id: Text = None
    message: str | None = None
    published_at: Date = None
    last_updated_at: Date = None
    company_id: Int = None
    custom_fields: Many[CustomFieldWire] = None
    client: ClientWire | None = None


class ChangeWire(_Wire):
    """One `trigger.data[]` entry; values are any JSON (tags may come as arrays)."""

    target: Text = None
    value: Any = None
    old_value: Any = None


class TriggerWire(_Wire):
    id: Int = None
    ticket_id: Int = None
    trigger_id: Int = None
    user_id: Int = None
    data: Many[ChangeWire] = None
    changed_at: Date = None
    old_status: Int = None
    new_status: Int = None
    company_id: Int = None


class CommentWire(_Wire):
    id: Int = None
    ticket_id: Int = None
    message: str | None = None
    type: str | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    user_id: Int = None
    client_id: Int = None
    is_first: Flag = None
    published_at: Date = None
    # Not documented for comments; read in case a sender adds it.
    company_id: Int = None


class CsiWire(_Wire):
    id: Int = None
    ticket_id: Int = None
    client_id: Int = None
    user_id: Int = None
    rating: Int = None
    comment: Text = None
    ticket_comment_id: Int = None
    company_id: Int = None
    created_at: Date = None
    updated_at: Date = None


_Unset: TypeAlias = msgspec.UnsetType


class Envelope(_Wire):
    """A whole webhook. The six kind keys default to UNSET so that a key sent as null still
    counts as present, exactly as `detect_kind` sees it."""

    chat_id: Any = msgspec.UNSET
    ping: Any = msgspec.UNSET
    ticket: TicketWire | _Unset | None = msgspec.UNSET
    trigger: TriggerWire | _Unset | None = msgspec.UNSET
    comment: CommentWire | _Unset | None = msgspec.UNSET
    csi: CsiWire | _Unset | None = msgspec.UNSET
    client: ClientWire | None = None
    custom_fields: Many[CustomFieldWire] = None


class KindKeys(_Wire):
    """Only which kind keys are present; used to name the kind when `Envelope` fails."""

    chat_id: msgspec.Raw | _Unset = msgspec.UNSET
    ping: msgspec.Raw | _Unset = msgspec.UNSET
    ticket: msgspec.Raw | _Unset = msgspec.UNSET
    trigger: msgspec.Raw | _Unset = msgspec.UNSET
    comment: msgspec.Raw | _Unset = msgspec.UNSET
    csi: msgspec.Raw | _Unset = msgspec.UNSET


ENVELOPE_DECODER = msgspec.json.Decoder(Envelope, strict=False)
KIND_KEYS_DECODER = msgspec.json.Decoder(KindKeys)
ANY_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


def items(many: list[T] | dict[str, T] | None) -> list[T]:
    """The elements of an array that may have arrived as a PHP sparse-array object."""
    if many is None:
        return []
    if isinstance(many, dict):
        return list(many.values())
    return many
