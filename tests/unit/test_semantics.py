"""Helpdesk semantics, case by case, as an analyst would check them by hand (docs/semantics.md).

Each case folds a short, hand-written history with the live projections and reads the rows.
Times are minutes after 09:00 UTC.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.events import CommentCreated, Event, FieldChange, TicketChanged, TicketCreated
from shared.eventstore import StoredEvent
from shared.projections import ALL
from shared.projections.base import fold_into, rows_of

T0 = datetime(2024, 3, 5, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def created(status: int = 1, assignee: int | None = None, subject: str = "Вопрос") -> Event:
    return TicketCreated(
        ticket_id=1,
        occurred_at=T0,
        published_at=T0,
        status_id=status,
        assignee_id=assignee,
        subject=subject,
    )


def change(
    change_id: int,
    minutes: float | None,
    old: int | None,
    new: int | None,
    *changes: FieldChange,
    received: float = 0,
) -> Event:
    """A change at `minutes`, or undated (received at `received`) when `minutes` is None."""
    dated = minutes is not None
    moment = at(minutes) if minutes is not None else at(received)
    return TicketChanged(
        ticket_id=1,
        change_id=change_id,
        occurred_at=moment,
        changed_at=moment if dated else None,
        time_source="usedesk" if dated else "received",
        received_at=at(received) if not dated else None,
        old_status=old,
        new_status=new,
        changes=changes,
    )


def comment(
    comment_id: int,
    minutes: float,
    author: str | None,
    *,
    public: bool = True,
    first: bool = False,
    user_id: int | None = None,
) -> Event:
    return CommentCreated(
        ticket_id=1,
        comment_id=comment_id,
        occurred_at=at(minutes),
        published_at=at(minutes),
        visibility="public" if public else "private",
        author=author,
        user_id=user_id,
        is_first=first,
    )


def tables(*events: Event) -> dict[str, list[dict[str, Any]]]:
    stored = [StoredEvent(n, e, None) for n, e in enumerate(events)]  # type: ignore[arg-type]
    out: dict[str, list[dict[str, Any]]] = {}
    for projection in ALL:
        states: dict[Any, Any] = {}
        fold_into(projection, states, stored)
        rows = rows_of(projection, [states[k] for k in sorted(states)])
        out[projection.table] = [row._asdict() for row in rows]
    return out


def ticket(*events: Event) -> dict[str, Any]:
    (row,) = tables(*events)["tickets"]
    return row


# 1. Only old_status != new_status is a status change.


def test_an_assignee_change_and_a_client_message_trigger_are_no_status_change() -> None:
    rows = tables(
        created(1),
        change(10, 5, 1, 1, FieldChange(target="assignee_id", value="7", old_value=None)),
        change(11, 6, 1, 1, FieldChange(target="message_from_client", value="1")),
        change(12, 7, 1, 2),
    )
    changes = rows["ticket_status_changes"]
    assert [(r["source_id"], r["old_status"], r["new_status"]) for r in changes] == [("12", 1, 2)]
    assert rows["tickets"][0]["status_durations"] == '{"1":420}'


# 2. Deleted, spam and merged end a ticket; they do not reopen it.


def test_solved_then_deleted_is_no_reopening_and_keeps_the_resolution() -> None:
    row = ticket(created(1), change(10, 30, 1, 2), change(11, 40, 2, 4))
    assert (row["status_id"], row["reopened_count"]) == (4, 0)
    assert row["resolved_at"] == at(30)
    assert row["first_resolved_at"] == at(30)


def test_closed_then_spam_or_merged_is_no_reopening() -> None:
    assert ticket(created(1), change(10, 30, 1, 3), change(11, 40, 3, 7))["reopened_count"] == 0
    assert ticket(created(1), change(10, 30, 1, 3), change(11, 40, 3, 10))["reopened_count"] == 0


def test_solved_then_open_pending_or_on_hold_is_a_reopening() -> None:
    for status in (1, 5, 6, 8):
        row = ticket(created(1), change(10, 30, 1, 2), change(11, 40, 2, status))
        assert (row["reopened_count"], row["resolved_at"]) == (1, None), status


# 3. Among a ticket's changes the change id decides the order, not the date.


def test_an_undated_change_takes_its_place_by_its_id() -> None:
    """Change 11 has no changed_at and arrived hours later; by its id it came between 10 and
    12. Placed by arrival it would leave the ticket open, with false gaps."""
    events = (
        created(1),
        change(10, 30, 1, 2),
        change(11, None, 2, 1, received=180),
        change(12, 60, 1, 3),
    )
    rows = tables(*events)
    row = rows["tickets"][0]
    assert (row["status_id"], row["suspected_gaps"], row["reopened_count"]) == (3, 0, 1)
    # Change 11 counts at the time of its dated successor (60): 1 for 30 min, 2 for 30 min.
    assert json.loads(row["status_durations"]) == {"1": 1800, "2": 1800}
    assert row["resolved_at"] == at(60)
    undated = next(r for r in rows["ticket_status_changes"] if r["source_id"] == "11")
    assert (undated["time_source"], undated["changed_at"]) == ("received", at(180))


def test_an_undated_change_within_its_neighbours_keeps_its_receive_time() -> None:
    row = ticket(
        created(1), change(10, 30, 1, 2), change(11, None, 2, 1, received=40), change(12, 60, 1, 3)
    )
    assert json.loads(row["status_durations"]) == {"1": 1800 + 1200, "2": 600}


# 5. First response: a public agent comment after the client's first message.


def test_first_response_is_the_agent_reply_after_the_client_wrote() -> None:
    row = ticket(
        created(1),
        comment(1, 10, "user", public=False),  # a private note is no response
        comment(2, 20, "user"),
    )
    assert row["first_response_at"] == at(20)


def test_an_agents_opening_message_on_an_outbound_ticket_is_no_response() -> None:
    row = ticket(
        created(1),
        comment(1, 0, "user", first=True),  # the agent wrote first: outbound
        comment(2, 15, "client"),
        comment(3, 25, "user"),
    )
    assert row["first_response_at"] == at(25)


def test_an_outbound_ticket_the_client_never_answered_has_no_first_response() -> None:
    row = ticket(created(1), comment(1, 0, "user", first=True), comment(2, 5, "user"))
    assert row["first_response_at"] is None


def test_a_comment_with_an_agent_id_and_no_from_is_an_agents() -> None:
    row = ticket(created(1), comment(1, 12, None, user_id=48211))
    assert row["first_response_at"] == at(12)
    (comment_row,) = tables(comment(1, 12, None, user_id=48211))["ticket_comments"]
    assert comment_row["author"] == "user"


# 6. An old_value that contradicts the state before it is a suspected gap too.


def test_an_assignee_old_value_that_contradicts_the_state_is_a_gap() -> None:
    row = ticket(
        created(1, assignee=5),
        change(10, 5, 1, 1, FieldChange(target="assignee_id", value="7", old_value="6")),
    )
    assert row["suspected_gaps"] == 1
    consistent = ticket(
        created(1, assignee=5),
        change(10, 5, 1, 1, FieldChange(target="assignee_id", value="7", old_value="5")),
    )
    assert consistent["suspected_gaps"] == 0


def test_a_subject_change_from_a_subject_never_seen_is_a_gap() -> None:
    row = ticket(
        created(1, subject="A"),
        change(10, 5, None, None, FieldChange(target="subject", value="C", old_value="B")),
    )
    assert row["suspected_gaps"] == 1


# 7. Every data[] entry is a field change; priority and tags reach the ticket.


def test_every_data_entry_is_a_field_change_row() -> None:
    rows = tables(
        created(1),
        change(
            10,
            5,
            1,
            2,
            FieldChange(target="status_id", value="2", old_value="1"),
            FieldChange(target="priority", value="high", old_value="low"),
            FieldChange(target="new_tags", value='["vip","срочно"]', value_json='["vip","срочно"]'),
        ),
    )
    fields = [
        (r["entry"], r["field"], r["old_value"], r["new_value"])
        for r in rows["ticket_field_changes"]
    ]
    assert fields == [
        (0, "status_id", "1", "2"),
        (1, "priority", "low", "high"),
        (2, "new_tags", None, '["vip","срочно"]'),
    ]
    row = rows["tickets"][0]
    assert row["priority"] == "high"
    # Tags sent as a JSON array are its elements, not `["vip"` and `"срочно"]`.
    assert json.loads(row["tags"]) == ["vip", "срочно"]


def test_a_ticket_field_change_sets_the_custom_field_named_by_its_id() -> None:
    row = ticket(
        TicketCreated(ticket_id=1, occurred_at=T0, status_id=1, custom_fields=()),
        change(
            10,
            5,
            None,
            None,
            FieldChange(target="ticket_field", value="B-2", extra={"field_id": 61}),
        ),
    )
    assert json.loads(row["custom_fields"]) == {"61": {"name": None, "value": "B-2"}}
