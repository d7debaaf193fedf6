"""From one ticket's API history to facts, built by the webhooks' own builders.

Each webhook-shaped payload of `shared.usedesk.history` is converted into the webhook wire
structs (`msgspec.convert(..., strict=False)`, as form bodies are) and handed to the builders of
`shared.usedesk.mapping`, so that an event means the same whichever way it came, and has the
key its webhook would have had.

Every fact appended has a delivery of its own (`deliveries.source = 'api'`), so that the
store's invariant holds unchanged: every event's delivery is `recorded` (architecture.md,
tests/helpers/checker.py). Its body is the payload the event was built from (dates already
explicit UTC), so decoding it again like any webhook gives the same event; its id is derived
from the fact's key (`uuid5`), so no pass can record one fact under two deliveries.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

import msgspec

from shared.envelope import Delivery
from shared.errors import DecodeError
from shared.events import Event, TicketSnapshot
from shared.recording import Decoded
from shared.usedesk import Kind
from shared.usedesk.history import Snapshot, TicketHistory, utc_date
from shared.usedesk.mapping import comment_created, ticket_changed, ticket_created
from shared.usedesk.media import JSON
from shared.usedesk.wire import Envelope

# uuid5 namespace of the deliveries of API facts; any constant, kept forever.
API_DELIVERIES = uuid.UUID("3b8e0c55-7f0e-4b8e-9c61-15d0ec0a1e15")
SNAPSHOT_KIND = "ticket_snapshot"

Builder = Callable[[Envelope, datetime, ZoneInfo, int | None], Event]
_BUILDERS: dict[str, Builder] = {
    "ticket_created": ticket_created,
    "ticket_changed": ticket_changed,
    "comment_created": comment_created,
}


@dataclass(frozen=True, slots=True)
class Fact:
    kind: str
    payload: dict[str, Any]
    event: Event
    # False for what no webhook carries: a comment written by a rule or bot (webhooks.md §4.3).
    webhook_expected: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return self.event.type, self.event.source_id

    def decoded(self, received_at: datetime) -> Decoded:
        body = json.dumps(self.payload, ensure_ascii=False, separators=(",", ":")).encode()
        delivery = Delivery(
            delivery_id=uuid.uuid5(API_DELIVERIES, f"{self.event.type}:{self.event.source_id}"),
            received_at=received_at,
            kind=cast(Kind, self.kind),  # `ticket_snapshot` is a kind of API deliveries only
            content_type=JSON,
            body=body,
        )
        return Decoded(delivery, self.event, None, "api")


@dataclass(frozen=True, slots=True)
class Unreadable:
    kind: str
    payload: dict[str, Any]
    error: str


def history_facts(
    history: TicketHistory, received_at: datetime, tz: ZoneInfo, company_id: int | None
) -> tuple[list[Fact], list[Unreadable]]:
    """The ticket's creation, changes and comments as facts, in that order."""
    payloads = [("ticket_created", history.created)]
    payloads += [("ticket_changed", change) for change in history.changes]
    payloads += [("comment_created", comment) for comment in history.comments]
    facts: list[Fact] = []
    unreadable: list[Unreadable] = []
    for kind, payload in payloads:
        try:
            envelope = msgspec.convert(payload, Envelope, strict=False)
            event = _BUILDERS[kind](envelope, received_at, tz, company_id)
        except (DecodeError, msgspec.ValidationError) as exc:
            unreadable.append(Unreadable(kind, payload, str(exc)))
            continue
        expected = not (kind == "comment_created" and payload["comment"].get("from") == "trigger")
        facts.append(Fact(kind, payload, event, expected))
    return facts, unreadable


def snapshot_fact(snapshot: Snapshot, received_at: datetime, company_id: int | None) -> Fact:
    """The API's word on the ticket's state, as one fact keyed by `last_updated_at`'s text."""
    iso = utc_date(snapshot.last_updated_at)
    moment = datetime.fromisoformat(iso).astimezone(UTC) if isinstance(iso, str) else None
    event = TicketSnapshot(
        ticket_id=snapshot.ticket_id,
        company_id=snapshot.company_id or company_id,
        occurred_at=moment or received_at,
        time_source="usedesk" if moment else "received",
        last_updated_at_text=snapshot.last_updated_at or "-",
        status_id=snapshot.status_id,
        subject=snapshot.subject,
        client_id=snapshot.client_id,
        assignee_id=snapshot.assignee_id,
        group_id=snapshot.group_id,
        channel_id=snapshot.channel_id,
        tags=snapshot.tags,
        last_updated_at=moment,
        after_change_id=snapshot.last_change_id,
    )
    return Fact(SNAPSHOT_KIND, {SNAPSHOT_KIND: snapshot.raw}, event, webhook_expected=False)


# The projection's columns a snapshot speaks about, and the snapshot's field for each.
_COMPARED = {
    "status_id": "status_id",
    "subject": "subject",
    "client_id": "client_id",
    "assignee_id": "assignee_id",
    "group_id": "group_id",
    "channel_id": "channel_id",
    "tags": "tags",
}
# Where the API's null means "none" (nobody assigned, no group), not "not said".
_NULL_MEANS_NONE = frozenset({"assignee_id", "group_id"})


def differences(snapshot: Snapshot, projected: dict[str, Any] | None) -> list[str]:
    """The columns where the projection disagrees with what the API says now."""
    if projected is None:
        return ["ticket"]
    found = []
    for column, attribute in _COMPARED.items():
        said = getattr(snapshot, attribute)
        if said is None and column not in _NULL_MEANS_NONE:
            continue
        if said != projected[column]:
            found.append(column)
    return found
