"""Hypothesis strategies: random histories of a few tickets, with equal timestamps on purpose."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from shared.envelope import Delivery
from shared.events import (
    CommentCreated,
    CustomField,
    Event,
    FieldChange,
    RatingGiven,
    TicketChanged,
    TicketCreated,
)
from shared.recording import Decoded

BASE = datetime(2024, 3, 5, 8, 0, tzinfo=UTC)
TICKETS = st.integers(min_value=1, max_value=3)
# A handful of seconds, so that many events share a timestamp.
MOMENTS = st.integers(min_value=0, max_value=5).map(lambda s: BASE + timedelta(seconds=s))
STATUSES = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 10])
TEXT = st.sampled_from(["Не работает", "Вопрос", "Решено", "help"])


def _created(ticket_id: int) -> st.SearchStrategy[Event]:
    return st.builds(
        lambda at, status, subject, assignee, field: TicketCreated(
            ticket_id=ticket_id,
            occurred_at=at,
            published_at=at,
            last_updated_at=at,
            status_id=status,
            subject=subject,
            assignee_id=assignee,
            company_id=1,
            custom_fields=(CustomField(id=61, name="Order", value=field),),
        ),
        MOMENTS,
        STATUSES,
        TEXT,
        st.none() | st.integers(1, 3),
        st.none() | TEXT,
    )


def _changed(ticket_id: int, change_id: int) -> st.SearchStrategy[Event]:
    """A change, sometimes undated (it takes its place by its id, its time from its
    neighbours), touching one or two fields, with an old value that may contradict."""
    target = st.sampled_from(
        [
            "assignee_id",
            "subject",
            "new_tags",
            "removed_tags",
            "group",
            "priority",
            "status_id",
            "ticket_field",
        ]
    )
    value = st.sampled_from(["1", "2", "vip", "vip,urgent", "Тема"])
    field = st.builds(
        lambda target, new, old, as_array: FieldChange(
            target=target,
            value=new,
            old_value=old,
            value_json=f'["{new}"]' if as_array and target.endswith("_tags") else None,
            # A custom field named by id only (the creation names it).
            extra={"field_id": 61} if target == "ticket_field" else {},
        ),
        target,
        value,
        st.none() | value,
        st.booleans(),
    )
    return st.builds(
        lambda at, dated, old, new, fields: TicketChanged(
            ticket_id=ticket_id,
            change_id=change_id,
            occurred_at=at,
            time_source="usedesk" if dated else "received",
            changed_at=at if dated else None,
            received_at=at + timedelta(seconds=30),
            old_status=old,
            new_status=new,
            changed_by="user",
            user_id=7,
            changes=tuple(fields),
        ),
        MOMENTS,
        st.booleans(),
        st.none() | STATUSES,
        st.none() | STATUSES,
        st.lists(field, min_size=1, max_size=2),
    )


def _comment(ticket_id: int, comment_id: int) -> st.SearchStrategy[Event]:
    return st.builds(
        lambda at, public, agent, first, named: CommentCreated(
            ticket_id=ticket_id,
            comment_id=comment_id,
            occurred_at=at,
            published_at=at,
            visibility="public" if public else "private",
            # Some comments name no author: it is derived from the id they carry.
            author=("user" if agent else "client") if named else None,
            user_id=7 if agent else None,
            client_id=None if agent else 9,
            is_first=first,
        ),
        MOMENTS,
        st.booleans(),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    )


def _rating(ticket_id: int, rating_id: int) -> st.SearchStrategy[Event]:
    return st.builds(
        lambda at, rating: RatingGiven(
            ticket_id=ticket_id,
            rating_id=rating_id,
            occurred_at=at,
            updated_at=at,
            created_at=BASE,
            rating=rating,
        ),
        MOMENTS,
        st.integers(1, 3),
    )


def _strategy(kind: str, ticket: int, number: int) -> st.SearchStrategy[Event]:
    if kind == "created":
        return _created(ticket)
    if kind == "changed":
        return _changed(ticket, 1000 + number)
    if kind == "comment":
        return _comment(ticket, 2000 + number)
    # Few rating ids, so that later versions of one rating replace earlier ones.
    return _rating(ticket, 3000 + ticket)


@st.composite
def histories(draw: st.DrawFn, max_events: int = 14) -> list[Event]:
    """Events of up to three tickets, unique per `(type, source_id)` as the store makes them."""
    events: list[Event] = []
    for number in range(draw(st.integers(1, max_events))):
        ticket = draw(TICKETS)
        kind = draw(st.sampled_from(["created", "changed", "changed", "comment", "rating"]))
        strategy = _strategy(kind, ticket, number)
        events.append(draw(strategy))
    unique: dict[tuple[str, str], Event] = {}
    for event in events:
        unique.setdefault((event.type, event.source_id), event)
    return list(unique.values())


def as_decoded(event: Event) -> Decoded:
    delivery = Delivery(
        delivery_id=uuid.uuid4(),
        received_at=BASE,
        kind=event.type,
        content_type="application/json",
        body=b"{}",
    )
    return Decoded(delivery, event, None)
