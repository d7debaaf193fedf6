"""DeskLedger's domain events: what happened at UseDesk, normalised, stored in `events.data`.

Rules for evolving them (they are decoded from rows written years ago):
- each struct is frozen, keyword-only and tagged explicitly (`schema` = `<type>.v<version>`);
- a new field gets a default; a field is never renamed, retyped or removed;
- an incompatible change is a new tag (`ticket_created.v2`) decoded beside the old one.

`source_id` is the dedupe key of `interface.md`: unique per `type` in the store. It never holds
a converted time: a rating's key carries UseDesk's own `updated_at` text.

Dates are kept twice: UseDesk's text as sent (`*_text`, a naive "2024-03-05 11:52:40" in an
undocumented zone) and the instant it was read as with `DESKLEDGER_SOURCE_TIMEZONE`. The text is
the fact; the instant is a reading, done again whenever the store is read for folding
(`shared.usedesk.mapping.read_dates`), so a corrected zone plus `deskledger replay` corrects
every projection. Events stored before the text was kept (no `*_text`) keep their instants.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import ClassVar, Literal

import msgspec

EventType = Literal[
    "ticket_created", "ticket_changed", "comment_created", "rating", "ticket_snapshot"
]
# Where `occurred_at` came from: UseDesk's own timestamp, or our receive time when the payload
# carried none (a minimal change event has no `changed_at`).
TimeSource = Literal["usedesk", "received"]


# `gc=False` on every struct here: an event holds text, numbers, instants and tuples of these
# structs (a change's `extra` only scalars), so it can never be part of a reference cycle, and
# the collector need not track the millions a replay or a worker batch makes. It changes
# nothing in the stored JSON.


class CustomField(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    id: int | None = None
    name: str | None = None
    value: str | None = None


class ClientRef(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The client as the payload described it (names and contacts, no secrets)."""

    id: int | None = None
    name: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    # The type of each phone ("mobile", "home"), in the order of `phones`.
    phone_types: tuple[str | None, ...] = ()
    note: str | None = None
    additional_ids: tuple[str, ...] = ()


class FieldChange(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One entry of `trigger.data[]`; values are kept as text (forms carry every scalar as text).

    What text would lose is kept beside it: the JSON of a value sent as anything but a string
    (`true`, `["a", "b"]`, `5`), and the entry's other keys (`sla_id`, a field id) as sent.
    """

    target: str
    value: str | None = None
    old_value: str | None = None
    value_json: str | None = None
    old_value_json: str | None = None
    extra: dict[str, str | int | float | bool | None] = {}


class _Event(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag_field="schema"):
    type: ClassVar[EventType]
    ticket_id: int
    company_id: int | None = None
    occurred_at: datetime
    time_source: TimeSource = "usedesk"
    # When the ingress received the webhook (UTC): the last resort for an undated fact.
    received_at: datetime | None = None

    @property
    def source_id(self) -> str:
        raise NotImplementedError


class TicketCreated(_Event, frozen=True, kw_only=True, tag="ticket_created.v1"):
    type: ClassVar[EventType] = "ticket_created"
    status_id: int | None = None
    subject: str | None = None
    client_id: int | None = None
    assignee_id: int | None = None
    group_id: int | None = None
    channel_id: int | None = None
    email: str | None = None
    additional_id: str | None = None
    message: str | None = None
    published_at: datetime | None = None
    last_updated_at: datetime | None = None
    custom_fields: tuple[CustomField, ...] = ()
    client: ClientRef | None = None
    published_at_text: str | None = None
    last_updated_at_text: str | None = None

    @property
    def source_id(self) -> str:
        return str(self.ticket_id)


class TicketChanged(_Event, frozen=True, kw_only=True, tag="ticket_changed.v1"):
    type: ClassVar[EventType] = "ticket_changed"
    change_id: int
    changes: tuple[FieldChange, ...] = ()
    # `trigger.old_status`/`new_status`, else the `status_id` entry of `changes`.
    old_status: int | None = None
    new_status: int | None = None
    user_id: int | None = None
    rule_id: int | None = None
    # "user" when an agent made the change, "rule" when a UseDesk rule (trigger) did.
    changed_by: Literal["user", "rule", "unknown"] = "unknown"
    changed_at: datetime | None = None
    custom_fields: tuple[CustomField, ...] = ()
    changed_at_text: str | None = None
    # The top-level `assignee_id` and `client` that some senders add (webhooks.md §4.2).
    assignee_id: int | None = None
    client: ClientRef | None = None

    @property
    def source_id(self) -> str:
        return str(self.change_id)


class CommentCreated(_Event, frozen=True, kw_only=True, tag="comment_created.v1"):
    type: ClassVar[EventType] = "comment_created"
    comment_id: int
    message: str | None = None
    visibility: Literal["public", "private"] | None = None
    # `comment.from`: "user" (an agent), "client" or "trigger".
    author: str | None = None
    user_id: int | None = None
    client_id: int | None = None
    is_first: bool = False
    published_at: datetime | None = None
    published_at_text: str | None = None
    # `comment.type` as sent, when it is none of the known visibilities.
    type_sent: str | None = None
    custom_fields: tuple[CustomField, ...] = ()
    # `comment.file` / `comment.files` as sent (JSON text; their shape is undocumented).
    files_json: str | None = None
    assignee_id: int | None = None
    client: ClientRef | None = None

    @property
    def source_id(self) -> str:
        return str(self.comment_id)

    @property
    def side(self) -> str | None:
        """Who wrote it: `from` as sent ("user" an agent, "client", "trigger"), else the one
        id it carries (`user_id` an agent, `client_id` the client), else unknown."""
        if self.author:
            return self.author
        if self.user_id and not self.client_id:
            return "user"
        if self.client_id and not self.user_id:
            return "client"
        return None


class RatingGiven(_Event, frozen=True, kw_only=True, tag="rating.v1"):
    type: ClassVar[EventType] = "rating"
    rating_id: int
    rating: int | None = None
    comment: str | None = None
    client_id: int | None = None
    user_id: int | None = None
    ticket_comment_id: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    created_at_text: str | None = None
    updated_at_text: str | None = None

    @property
    def source_id(self) -> str:
        # A rating can change and keep its id: each version is its own fact, keyed by UseDesk's
        # own `updated_at` text (never a converted time: a new zone must not make a new fact).
        # Ratings stored before the text was kept have the converted instant in their key.
        if self.updated_at_text is not None:
            return f"{self.rating_id}@{self.updated_at_text or '-'}"
        stamp = self.updated_at.isoformat() if self.updated_at else "-"
        return f"{self.rating_id}@{stamp}"


_encoder = msgspec.json.Encoder()


def encode_event(event: Event) -> bytes:
    """The JSON stored in `events.data` (it carries its own `schema` tag)."""
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> Event:
    """An event back from `events.data`."""
    return _decoder.decode(data)


# PostgreSQL text and jsonb cannot hold U+0000; U+FFFD is what every stored copy of the text
# has instead (the body in `deliveries` keeps the original bytes).
NUL_ESCAPE = b"\\u0000"
NUL_REPLACEMENT = b"\\ufffd"


# In msgspec's JSON every backslash starts an escape: reading them left to right tells an
# escaped NUL from the text `\u0000` (an escaped backslash, then "u0000"), which stays.
_ESCAPED_BACKSLASH_OR_NUL = re.compile(rb"\\(\\|u0000)")


def _without_escaped_nul(found: re.Match[bytes]) -> bytes:
    return NUL_REPLACEMENT if found.group(1) == b"u0000" else found.group(0)


def without_nul(event: Event) -> Event:
    """`event` with every U+0000 in its text replaced by U+FFFD, so that `events.data` and the
    projections hold the same text (issue 19); the event itself when it has none."""
    encoded = encode_event(event)
    if NUL_ESCAPE not in encoded:
        return event
    cleaned = _ESCAPED_BACKSLASH_OR_NUL.sub(_without_escaped_nul, encoded)
    return event if cleaned == encoded else decode_event(cleaned)


class TicketSnapshot(_Event, frozen=True, kw_only=True, tag="ticket_snapshot.v1"):
    """A ticket's current state as UseDesk's REST API reported it, recorded by `deskledger
    reconcile` where the ticket's history (events) does not lead to that state: a lost webhook
    the API has no history of (a change it does not list, tags). `occurred_at` is the reading
    of `last_updated_at_text` (UTC, as the API's dates are); a field is None when not said.

    Keyed by the ticket and UseDesk's own `last_updated_at` text, so that a pass run again over
    an unchanged ticket appends nothing.
    """

    type: ClassVar[EventType] = "ticket_snapshot"
    last_updated_at_text: str
    status_id: int | None = None
    subject: str | None = None
    client_id: int | None = None
    assignee_id: int | None = None
    group_id: int | None = None
    channel_id: int | None = None
    # None: the API gave no tags; () : it said there are none.
    tags: tuple[str, ...] | None = None
    last_updated_at: datetime | None = None
    # The last change the API listed: the state is the one after it (None: after the creation).
    after_change_id: int | None = None

    @property
    def source_id(self) -> str:
        return f"{self.ticket_id}@{self.last_updated_at_text}"


# Defined after every event struct, the last of which is appended at the end of this module.
Event = TicketCreated | TicketChanged | CommentCreated | RatingGiven | TicketSnapshot
_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)
