"""One transaction per batch: outcomes, idempotency, projections of the fixture story."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime

import asyncpg

from services.worker.report import report
from shared.logging import configure_logging
from shared.recording import record
from tests.helpers.deliveries import STORY, decoded, fixture


async def test_fixture_story_becomes_events_and_a_ticket_row(db: asyncpg.Connection) -> None:
    result = await record(db, [decoded(fixture(name)) for name in STORY])
    assert sorted(result.outcomes.values()) == ["recorded"] * 4
    assert await db.fetchval("SELECT count(*) FROM events") == 4
    ticket = await db.fetchrow("SELECT * FROM tickets WHERE ticket_id = 3318840")
    assert ticket is not None
    assert ticket["status_id"] == 2
    assert ticket["subject"] == "Код подтверждения (решено)"
    assert ticket["assignee_id"] == 48211
    assert ticket["client_id"] == 5512309
    assert ticket["company_id"] == 160442
    assert ticket["channel_id"] == 58213
    assert ticket["email"] == "marina.k@example.org"
    assert ticket["comments_count"] == 1
    assert ticket["rating"] == 3
    assert ticket["partial"] is False
    assert ticket["first_response_at"] == datetime(2024, 3, 5, 8, 52, 40, tzinfo=UTC)
    assert ticket["first_resolved_at"] == datetime(2024, 3, 5, 9, 4, 18, tzinfo=UTC)
    assert ticket["resolved_at"] == datetime(2024, 3, 5, 9, 4, 18, tzinfo=UTC)
    assert ticket["published_at"] == datetime(2024, 3, 5, 8, 37, 52, tzinfo=UTC)
    assert ticket["last_updated_at"] == datetime(2024, 3, 5, 9, 4, 18, tzinfo=UTC)
    assert json.loads(ticket["custom_fields"]) == {
        "61": {"name": "Order number", "value": "A-55120"},
        "64": {"name": "Платформа", "value": "Android"},
    }
    # Created as 8 (new), changed "from 1": the change to 1 never arrived.
    assert ticket["suspected_gaps"] == 1
    # 8 from 08:37:52 to the change at 09:04:18.
    assert json.loads(ticket["status_durations"]) == {"8": 1586}
    assert await db.fetchval("SELECT count(*) FROM ticket_comments") == 1
    assert await db.fetchval("SELECT count(*) FROM ticket_ratings") == 1
    change = await db.fetchrow("SELECT * FROM ticket_status_changes")
    assert change is not None
    assert (change["old_status"], change["new_status"], change["user_id"]) == (1, 2, 48211)


async def test_duplicates_become_one_event(db: asyncpg.Connection) -> None:
    first = await record(db, [decoded(fixture("ticket_changed.json"))])
    again = await record(
        db, [decoded(fixture("ticket_changed.json")), decoded(fixture("ticket_changed.json"))]
    )
    assert list(first.outcomes.values()) == ["recorded"]
    assert sorted(again.outcomes.values()) == ["duplicate", "duplicate"]
    assert await db.fetchval("SELECT count(*) FROM events") == 1
    assert await db.fetchval("SELECT count(*) FROM deliveries") == 3
    assert await db.fetchval("SELECT count(*) FROM ticket_status_changes") == 1


async def test_redelivery_of_a_processed_delivery_changes_nothing(db: asyncpg.Connection) -> None:
    delivery_id = uuid.uuid4()
    await record(db, [decoded(fixture("comment_created.json"), delivery_id)])
    before = await db.fetch("SELECT * FROM tickets")
    again = await record(db, [decoded(fixture("comment_created.json"), delivery_id)])
    assert again.already_processed == 1
    assert again.outcomes == {}
    assert await db.fetch("SELECT * FROM tickets") == before
    outcome = await db.fetchval(
        "SELECT outcome FROM deliveries WHERE delivery_id = $1", delivery_id
    )
    assert outcome == "recorded"


async def test_poison_is_rejected_and_the_rest_of_its_batch_recorded(
    db: asyncpg.Connection,
) -> None:
    bad_shape = {"secret": "x", "trigger": {"id": "abc", "ticket_id": 5}}
    batch = [
        decoded(fixture("ticket_created.json")),
        decoded(b"\xff\xfe not json"),
        decoded(bad_shape),
        decoded({"ping": 1}),
        decoded(fixture("rating.json")),
    ]
    result = await record(db, batch)
    assert result.counts() == {"recorded": 2, "rejected": 2, "ignored": 1}
    rows = await db.fetch("SELECT outcome, error FROM deliveries WHERE outcome = 'rejected'")
    assert all(row["error"] for row in rows)
    assert any("trigger.id" in row["error"] for row in rows)
    assert await db.fetchval("SELECT count(*) FROM events") == 2


async def test_change_before_creation_is_completed_without_losing_newer_values(
    db: asyncpg.Connection,
) -> None:
    await record(db, [decoded(fixture("ticket_changed.json"))])
    partial = await db.fetchrow("SELECT * FROM tickets")
    assert partial is not None
    assert partial["partial"] is True
    assert partial["subject"] == "Код подтверждения (решено)"
    await record(db, [decoded(fixture("ticket_created.json"))])
    ticket = await db.fetchrow("SELECT * FROM tickets")
    assert ticket is not None
    assert ticket["partial"] is False
    assert ticket["subject"] == "Код подтверждения (решено)"  # the change is newer
    assert ticket["status_id"] == 2
    assert ticket["email"] == "marina.k@example.org"  # only the creation speaks of it


async def test_a_suspected_gap_is_logged_with_both_event_ids(db: asyncpg.Connection) -> None:
    """The worker's report of each batch names the gaps that batch brought to light."""
    stream = io.StringIO()
    configure_logging("test", "info", "json", stream=stream)
    # The change says "from 1", but the ticket was created as 8; the rating brings no new gap,
    # and a second copy of the change appends nothing: the gap is logged once only.
    for name in (
        "ticket_created.json",
        "ticket_changed.json",
        "rating.json",
        "ticket_changed.json",
    ):
        batch = [decoded(fixture(name))]
        report(await record(db, batch), batch, 0.0)
    gaps = [json.loads(line) for line in stream.getvalue().splitlines() if "suspected_gap" in line]
    assert len(gaps) == 1
    assert gaps[0]["previous_event"] == "ticket_created:3318840"
    assert gaps[0]["gap_event"] == "ticket_changed:90417733"
    assert gaps[0]["ticket_id"] == 3318840
