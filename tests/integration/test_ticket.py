"""`deskledger ticket ID` (issue 17): one ticket's deliveries, events, rows and gaps."""

from __future__ import annotations

import asyncpg

from services.ticket import gather, render
from shared.projections import ALL
from shared.settings import Settings
from tests.helpers.deliveries import story_bodies
from tests.helpers.worker import drain, publish

TICKET = 3318840  # the fixture story's ticket


async def test_a_ticket_shows_its_deliveries_events_rows_and_gaps(
    settings: Settings, db: asyncpg.Connection
) -> None:
    ids = await publish(settings, [*story_bodies(), story_bodies()[0]])  # and a duplicate
    await drain(settings)
    report = await gather(db, TICKET, settings)
    events = report["events"]
    assert [e["position"] for e in events] == sorted(e["position"] for e in events)
    assert {e["type"] for e in events} == {
        "ticket_created",
        "ticket_changed",
        "comment_created",
        "rating",
    }
    assert {e["source"] for e in events} == {"webhook"}
    deliveries = report["deliveries"]
    assert {d["delivery_id"] for d in deliveries} == {e["delivery_id"] for e in events}
    assert {d["outcome"] for d in deliveries} == {"recorded"}
    assert set(ids) - {d["delivery_id"] for d in deliveries}  # the duplicate: said, not found
    assert "duplicates" in report["deliveries_not_found"]
    assert set(report["projections"]) == {p.table for p in ALL}
    (row,) = report["projections"]["tickets"]
    assert row["ticket_id"] == TICKET
    assert "fold_state" not in row
    assert len(report["projections"]["ticket_comments"]) == 1
    assert len(report["projections"]["ticket_ratings"]) == 1
    (gap,) = report["suspected_gaps"]
    assert gap["field"] == "status_id"
    assert gap["previous_event"] == f"ticket_created:{TICKET}"
    assert row["suspected_gaps"] == 1
    text = render(report)
    assert "events (4, in store order)" in text
    assert "suspected gaps (1)" in text


async def test_an_unknown_ticket_is_empty(settings: Settings, db: asyncpg.Connection) -> None:
    report = await gather(db, 1, settings)
    assert report["events"] == []
    assert report["suspected_gaps"] == []
    assert all(rows == [] for rows in report["projections"].values())
