"""Lifecycle metrics on hand-checked histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.events import CommentCreated, TicketChanged, TicketCreated
from shared.eventstore import StoredEvent
from shared.projections import tickets
from shared.projections.base import fold_into

T0 = datetime(2024, 3, 5, 9, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def created(status: int = 1) -> TicketCreated:
    return TicketCreated(ticket_id=1, occurred_at=T0, published_at=T0, status_id=status)


def change(change_id: int, minutes: int, old: int | None, new: int) -> TicketChanged:
    return TicketChanged(
        ticket_id=1, change_id=change_id, occurred_at=at(minutes), old_status=old, new_status=new
    )


def comment(comment_id: int, minutes: int, public: bool, agent: bool) -> CommentCreated:
    return CommentCreated(
        ticket_id=1,
        comment_id=comment_id,
        occurred_at=at(minutes),
        published_at=at(minutes),
        visibility="public" if public else "private",
        author="user" if agent else "client",
    )


def row(*events: object) -> dict[str, object]:
    stored = [StoredEvent(i, e, None) for i, e in enumerate(events)]  # type: ignore[arg-type]
    states: dict[int, tickets.TicketState] = {}
    fold_into(tickets.PROJECTION, states, stored)
    return tickets.row(states[1])._asdict()


def test_solved_reopened_and_solved_again() -> None:
    r = row(
        created(1),
        change(10, 30, 1, 2),  # solved after 30 min
        change(11, 40, 2, 1),  # reopened 10 min later
        change(12, 100, 1, 3),  # closed after 60 more min
    )
    assert r["status_id"] == 3
    assert r["first_resolved_at"] == at(30)
    assert r["resolved_at"] == at(100)
    assert r["reopened_count"] == 1
    assert r["status_durations"] == '{"1":5400,"2":600}'
    assert r["suspected_gaps"] == 0


def test_resolved_at_is_null_while_open_again() -> None:
    r = row(created(1), change(10, 30, 1, 2), change(11, 40, 2, 1))
    assert r["status_id"] == 1
    assert r["first_resolved_at"] == at(30)
    assert r["resolved_at"] is None


def test_resolved_at_is_the_start_of_the_resolved_run() -> None:
    r = row(created(1), change(10, 30, 1, 2), change(11, 50, 2, 3))
    assert r["resolved_at"] == at(30)  # solved, then closed: resolved since the first


def test_a_lost_change_shows_as_a_suspected_gap() -> None:
    r = row(created(8), change(10, 30, 1, 2), change(11, 40, 6, 1))
    assert r["suspected_gaps"] == 2


def test_first_response_is_the_first_public_agent_comment() -> None:
    r = row(
        created(1),
        comment(100, 5, public=True, agent=False),  # the client
        comment(101, 7, public=False, agent=True),  # an internal note
        comment(102, 12, public=True, agent=True),
        comment(103, 9, public=True, agent=True),  # earlier, arriving later
    )
    assert r["first_response_at"] == at(9)
    assert r["comments_count"] == 4


def test_equal_timestamps_order_creation_before_changes() -> None:
    r = row(change(10, 0, 1, 5), created(1))
    assert r["status_id"] == 5
    assert r["status_durations"] == '{"1":0}'
