"""UseDesk webhook payloads as sent: msgspec structs, decoded in one pass.

The tolerant structs ignore unknown fields; every field but a kind's natural id may be missing
or null (checked when the event is built, not here); ids, statuses and flags come as ints or
numeric strings (decoded with `strict=False`); arrays may come as objects, because PHP's
`json_encode` turns a sparse array into `{"1": …, "3": …}`. See `docs/usedesk-webhooks.md` §3.

Each struct comes twice. The closed variants (`Closed*`) declare every documented field,
forbid the rest and type every value with a bounded depth, so msgspec cannot recurse deeper
than the schema whatever the bytes: the hot path needs no depth scan of the body (I8). One
exception: custom fields decode straight into the event's `CustomField`, which ignores an
undocumented key, so msgspec skips its value under its own recursion guard (a deep one ends as
a RecursionError, then the depth check; tested on a small thread stack). A payload they refuse
(an undocumented field, an odd value) takes the tolerant structs after a depth check, and so
does one whose custom fields `mapping` finds the closed reading got wrong (`Reread`). No event
carries `secret` or `custom_blocks` (reliability I7).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeAlias, TypeVar, cast

import msgspec

from shared.events import CustomField

T = TypeVar("T")

# `""` is what PHP makes of a null or false cast to text; it means "no value", not an error.
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
Int: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)] | Literal[""] | None
# Statuses and ratings land in 32-bit `integer` columns: a wider value is refused here, by the
# decoder, as this webhook's `rejected` outcome, not by PostgreSQL in the middle of a batch.
Int32: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)] | Literal[""] | None
Flag: TypeAlias = bool | int | Literal[""] | None
# Text some senders type as a number (`additional_id` in chat payloads, phone numbers); any
# JSON is accepted and turned into text later, so an odd value never costs the whole event.
Text: TypeAlias = Any
# Dates stay text here: the zone is applied when the event is built, and PHP's "no date"
# (`""`, `0000-00-00 00:00:00`) must not fail the whole payload.
Date: TypeAlias = str | None
# Covariant, so that a closed struct may narrow an element type; msgspec decodes lists/dicts.
Many: TypeAlias = Sequence[T] | Mapping[str, T] | None
# Bounded stand-ins for `Any` in the closed structs.
Scalar: TypeAlias = str | int | float | bool | None
Value: TypeAlias = Scalar | list[Scalar] | dict[str, Scalar]


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
    type: Text = None


class AdditionalIdWire(_Wire):
    value: Text = None


class ClientWire(_Wire):
    id: Int = None
    name: Text = None
    note: Text = None
    emails: Many[EmailWire | str] = None
    phones: Many[PhoneWire | str] = None
    additional_ids: Many[AdditionalIdWire | str] = None


class TicketWire(_Wire):
    """Text fields are `Text`: a numeric subject or `"email": false` is coerced to text with a
    warning on the delivery, not a rejection (docs/semantics.md)."""

    id: Int = None
    status_id: Int32 = None
    subject: Text = None
    client_id: Int = None
    assignee_id: Int = None
    group: Int = None
    channel_id: Int = None
    email: Text = None
    additional_id: Text = None
    message: Text = None
    published_at: Date = None
    last_updated_at: Date = None
    company_id: Int = None
    custom_fields: Many[CustomFieldWire] = None
    client: ClientWire | None = None


class TriggerWire(_Wire):
    id: Int = None
    ticket_id: Int = None
    trigger_id: Int = None
    user_id: Int = None
    # `data[]` entries as sent: `target`, `value`, `old_value` (any JSON: tags may come as
    # arrays) and whatever else an entry carries (`sla_id`, a field id), all of it kept.
    data: Many[dict[str, Any]] = None
    changed_at: Date = None
    old_status: Int32 = None
    new_status: Int32 = None
    company_id: Int = None


class CommentWire(_Wire):
    id: Int = None
    ticket_id: Int = None
    message: Text = None
    type: Text = None
    from_: Text = msgspec.field(default=None, name="from")
    user_id: Int = None
    client_id: Int = None
    is_first: Flag = None
    published_at: Date = None
    # Not documented for comments; read in case a sender adds it.
    company_id: Int = None
    # Attachments (webhooks.md §4.3, OBS C1): their shape is undocumented, kept as sent.
    file: Any = None
    files: Any = None


class CsiWire(_Wire):
    id: Int = None
    ticket_id: Int = None
    client_id: Int = None
    user_id: Int = None
    rating: Int32 = None
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
    # Typed at the top level by a receiver in the wild (§4.2, C1).
    assignee_id: Int = None


# The closed envelope decodes custom fields straight into the event's `CustomField` (a third
# of the cost of building one per field in Python). It ignores unknown keys, which msgspec then
# skips under its recursion guard, and its `id` is any integer: `mapping` checks each id and
# asks for the tolerant reading (`Reread`) of a field the wire types would have refused or
# normalised (an id of 0, out of range, a field with nothing in it).
ClosedFields: TypeAlias = tuple[CustomField, ...] | dict[str, CustomField] | None


class Reread(Exception):
    """A closed envelope holds a value only the tolerant structs read right: decode again."""


class ClosedCustomBlock(_Wire, forbid_unknown_fields=True):
    name: str | None = None
    url: str | None = None
    secret_key: str | None = None


class ClosedEmail(EmailWire, forbid_unknown_fields=True):
    email: Scalar = None
    client_id: Int = None


class ClosedPhone(PhoneWire, forbid_unknown_fields=True):
    phone: Scalar = None
    type: str | None = None
    client_id: Int = None


class ClosedAdditionalId(AdditionalIdWire, forbid_unknown_fields=True):
    value: Scalar = None
    client_id: Int = None


class ClosedClient(ClientWire, forbid_unknown_fields=True):
    name: str | None = None
    avatar: str | None = None
    note: str | None = None
    emails: Many[ClosedEmail | str] = None
    phones: Many[ClosedPhone | str] = None
    additional_ids: Many[ClosedAdditionalId] = None


class ClosedTicket(TicketWire, forbid_unknown_fields=True):
    subject: str | None = None
    email: str | None = None
    message: str | None = None
    additional_id: Scalar = None
    custom_fields: ClosedFields = None  # type: ignore[assignment]
    custom_blocks: Many[ClosedCustomBlock] = None
    client: ClosedClient | None = None


class ClosedTrigger(TriggerWire, forbid_unknown_fields=True):
    data: Many[dict[str, Value]] = None


class ClosedComment(CommentWire, forbid_unknown_fields=True):
    message: str | None = None
    type: str | None = None
    from_: str | None = msgspec.field(default=None, name="from")
    delivered: Flag = None
    readed: Flag = None
    file: Value = None
    files: Many[Value] = None


class ClosedCsi(CsiWire, forbid_unknown_fields=True):
    comment: Scalar = None


class ClosedEnvelope(Envelope, forbid_unknown_fields=True):
    secret: str | None = None
    chat_id: Scalar | _Unset = msgspec.UNSET
    ping: Scalar | _Unset = msgspec.UNSET
    ticket: ClosedTicket | _Unset | None = msgspec.UNSET
    trigger: ClosedTrigger | _Unset | None = msgspec.UNSET
    comment: ClosedComment | _Unset | None = msgspec.UNSET
    csi: ClosedCsi | _Unset | None = msgspec.UNSET
    client: ClosedClient | None = None
    custom_fields: ClosedFields = None  # type: ignore[assignment]
    custom_blocks: Many[ClosedCustomBlock] = None


class KindKeys(_Wire):
    """Only which kind keys are present; used to name the kind when `Envelope` fails."""

    chat_id: msgspec.Raw | _Unset = msgspec.UNSET
    ping: msgspec.Raw | _Unset = msgspec.UNSET
    ticket: msgspec.Raw | _Unset = msgspec.UNSET
    trigger: msgspec.Raw | _Unset = msgspec.UNSET
    comment: msgspec.Raw | _Unset = msgspec.UNSET
    csi: msgspec.Raw | _Unset = msgspec.UNSET


CLOSED_DECODER = msgspec.json.Decoder(ClosedEnvelope, strict=False)
ENVELOPE_DECODER = msgspec.json.Decoder(Envelope, strict=False)
KIND_KEYS_DECODER = msgspec.json.Decoder(KindKeys)
ANY_DECODER: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()


def text(value: Any) -> str | None:
    """A wire value as text, the way a form would have carried it (bools as PHP casts them)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, int) and value.bit_length() <= 64:
        return str(value)
    # A form drops empty arrays, so `[]` and `{}` say no more than null.
    if not value and isinstance(value, list | dict):
        return None
    return _ENCODER.encode(value).decode()


def items(many: Many[T]) -> Sequence[T]:
    """The elements of an array that may have arrived as a PHP sparse-array object."""
    if isinstance(many, list) or many is None:
        return many or ()
    return list(cast("Mapping[str, T]", many).values())
