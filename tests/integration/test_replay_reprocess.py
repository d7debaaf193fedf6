"""`replay --reprocess-rejected`: deliveries a stricter past decoder rejected become events."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import asyncpg

from shared.recording import record
from shared.settings import Settings
from tests.helpers.deliveries import decoded, fixture
from tests.helpers.replay import projection_rows, replay_process

OLD_ERROR = 'ticket_created: ticket.status_id: expected an integer, got "8" (decoder 0.1)'
INSERT_REJECTED = """
INSERT INTO deliveries (delivery_id, received_at, kind, content_type, body, outcome, error)
VALUES ($1, $2, $3, 'application/json', $4, 'rejected', $5)
"""


async def _rejected(db: asyncpg.Connection, kind: str, payload: object) -> uuid.UUID:
    """A delivery as an older, stricter decoder left it: rejected, with that decoder's error."""
    delivery_id = uuid.uuid4()
    body = json.dumps(payload).encode()
    await db.execute(INSERT_REJECTED, delivery_id, datetime.now(UTC), kind, body, OLD_ERROR)
    return delivery_id


async def _outcome(db: asyncpg.Connection, delivery_id: uuid.UUID) -> tuple[str, str | None]:
    row = await db.fetchrow(
        "SELECT outcome, error FROM deliveries WHERE delivery_id = $1", delivery_id
    )
    assert row is not None
    return row["outcome"], row["error"]


async def _three_rejected(db: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    await record(db, [decoded(fixture("comment_created.json"))])
    now_fine = await _rejected(db, "ticket_created", fixture("ticket_created.json"))
    duplicate = await _rejected(db, "comment_created", fixture("comment_created.json"))
    still_bad = await _rejected(db, "ticket_created", {"ticket": {"id": "abc", "status_id": 1}})
    return now_fine, duplicate, still_bad


async def test_rejected_deliveries_are_decoded_again_and_recorded(
    settings: Settings, db: asyncpg.Connection
) -> None:
    now_fine, duplicate, still_bad = await _three_rejected(db)

    status, out, err = await replay_process(settings, "--reprocess-rejected", "--batch-size", "2")

    assert status == 0, err
    assert (
        "reprocess: 3 rejected deliveries reprocessed; 1 now recorded, 1 duplicates, "
        "0 ignored, 1 still rejected" in out
    )
    assert await _outcome(db, now_fine) == ("recorded", None)
    assert await _outcome(db, duplicate) == ("duplicate", None)
    outcome, error = await _outcome(db, still_bad)
    assert outcome == "rejected"
    assert error == 'ticket_created: ticket.id: expected an integer, got "abc"'
    events = await db.fetch("SELECT type, delivery_id FROM events ORDER BY position")
    assert [(e["type"], e["delivery_id"] == now_fine) for e in events] == [
        ("comment_created", False),
        ("ticket_created", True),
    ]
    ticket = await db.fetchrow("SELECT partial, comments_count, status_id FROM tickets")
    assert ticket is not None
    assert (ticket["partial"], ticket["comments_count"], ticket["status_id"]) == (False, 1, 8)

    # Again: only the one still rejected is tried, and it stays so.
    status, out, _ = await replay_process(settings, "--reprocess-rejected")
    assert status == 0
    assert "1 rejected deliveries reprocessed; 0 now recorded" in out
    assert "1 still rejected" in out


async def test_reprocess_dry_run_records_nothing(
    settings: Settings, db: asyncpg.Connection
) -> None:
    ids = await _three_rejected(db)
    rows = await projection_rows(db)

    status, out, err = await replay_process(settings, "--reprocess-rejected", "--dry-run")

    assert status == 0, err
    assert "3 rejected deliveries; 2 now decode, 0 would be ignored, 1 still rejected" in out
    for delivery_id in ids:
        assert await _outcome(db, delivery_id) == ("rejected", OLD_ERROR)
    assert await db.fetchval("SELECT count(*) FROM events") == 1
    assert await projection_rows(db) == rows
