"""Helpdesk semantics through the real queue, worker, store and replay (issue 14).

- the field history lands in `ticket_field_changes`, one row per `data[]` entry;
- a coerced value is recorded with a warning on its delivery, not rejected;
- the source zone is a reading: a replay with another zone moves every instant, and the same
  rating recorded under another zone is the same fact (its key is UseDesk's text).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from services.replay.rebuild import Rebuild, RebuildOptions
from shared.projections import ALL
from shared.settings import Settings
from shared.usedesk import Kind
from tests.helpers.deliveries import fixture
from tests.helpers.worker import drain, publish


def _body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


async def test_every_field_a_change_touched_is_a_row(
    settings: Settings, db: asyncpg.Connection
) -> None:
    changed = fixture("ticket_changed.json")
    changed["trigger"]["data"].append({"target": "new_tags", "value": ["vip", "срочно"]})
    await publish(settings, [("ticket_created", _body(fixture("ticket_created.json")))])
    await publish(settings, [("ticket_changed", _body(changed))])
    await drain(settings)
    rows = await db.fetch(
        "SELECT entry, field, old_value, new_value, new_value_json, user_id"
        " FROM ticket_field_changes ORDER BY entry"
    )
    assert [tuple(r.values()) for r in rows] == [
        (0, "assignee_id", None, "48211", None, 48211),
        (1, "status_id", "1", "2", None, 48211),
        (2, "subject", "Не приходит код подтверждения", "Код подтверждения (решено)", None, 48211),
        (3, "new_tags", None, '["vip","срочно"]', '["vip","срочно"]', 48211),
    ]
    tags = await db.fetchval("SELECT tags FROM tickets WHERE ticket_id = 3318840")
    assert json.loads(tags) == ["vip", "срочно"]


async def test_a_coerced_value_is_recorded_with_a_warning(
    settings: Settings, db: asyncpg.Connection
) -> None:
    created = fixture("ticket_created.json")
    created["ticket"]["subject"] = 404
    (delivery_id,) = await publish(settings, [("ticket_created", _body(created))])
    await drain(settings)
    row = await db.fetchrow(
        "SELECT outcome, warnings FROM deliveries WHERE delivery_id = $1", delivery_id
    )
    assert row["outcome"] == "recorded"
    assert row["warnings"] == [
        'ticket_created: ticket.subject: expected text, got 404; kept as "404"'
    ]
    assert await db.fetchval("SELECT subject FROM tickets") == "404"


async def test_a_new_zone_and_a_replay_correct_every_instant(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Recorded while the zone was Moscow; UseDesk's dates turn out to be UTC."""
    bodies: list[tuple[Kind, bytes]] = [
        ("ticket_created", _body(fixture("ticket_created.json"))),
        ("comment_created", _body(fixture("comment_created.json"))),
        ("ticket_changed", _body(fixture("ticket_changed.json"))),
        ("rating", _body(fixture("rating.json"))),
    ]
    await publish(settings, bodies)
    await drain(settings)
    moscow = await db.fetchrow("SELECT published_at, resolved_at FROM tickets")
    assert moscow["published_at"] == datetime(2024, 3, 5, 8, 37, 52, tzinfo=UTC)

    utc = ZoneInfo("UTC")
    report = await Rebuild(settings.database_url, RebuildOptions(ALL, tz=utc)).run()
    assert report.swapped
    corrected = await db.fetchrow(
        "SELECT published_at, resolved_at, first_response_at FROM tickets"
    )
    assert corrected["published_at"] == datetime(2024, 3, 5, 11, 37, 52, tzinfo=UTC)
    assert corrected["resolved_at"] == datetime(2024, 3, 5, 12, 4, 18, tzinfo=UTC)
    assert corrected["first_response_at"] == datetime(2024, 3, 5, 11, 52, 40, tzinfo=UTC)
    changed_at = await db.fetchval("SELECT changed_at FROM ticket_status_changes")
    assert changed_at == datetime(2024, 3, 5, 12, 4, 18, tzinfo=UTC)

    # The same rating again, now read in UTC: the same fact, a duplicate delivery.
    await publish(settings.replace(source_timezone=utc), [bodies[3]])
    await drain(settings.replace(source_timezone=utc))
    assert await db.fetchval("SELECT count(*) FROM events WHERE type = 'rating'") == 1
    outcomes = await db.fetch("SELECT outcome FROM deliveries WHERE kind = 'rating'")
    assert sorted(r["outcome"] for r in outcomes) == ["duplicate", "recorded"]
