"""`replay` rebuilds the live rows byte for byte, repairs and reports what differs, swaps safely."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from structlog.testing import capture_logs

from services.replay.locks import REPLAY_LOCK_KEY, ReplayBusy
from services.replay.rebuild import RebuildError
from shared.events import Event
from shared.projections import ALL
from shared.recording import record
from shared.settings import Settings
from tests.helpers.deliveries import decoded
from tests.helpers.histories import as_decoded
from tests.helpers.replay import (
    leftovers,
    projection_rows,
    replay,
    replay_process,
    table_oids,
    ticket_story,
)
from tests.helpers.services import ServiceUrls, database_from_template
from tests.helpers.worker import drain, publish
from tests.integration.test_projection_order import PROJECTION_KEYS, deliveries


async def _replayed(services: ServiceUrls, template: str, batches: list[list[Event]]) -> None:
    async with database_from_template(services, template, prefix="dl_replay") as url:
        conn = await asyncpg.connect(url)
        try:
            for batch in batches:
                await record(conn, [as_decoded(event) for event in batch])
            before = await projection_rows(conn)
            report = await replay(url, fetch_size=3)
            assert await projection_rows(conn) == before
            assert report.differences == 0
            assert report.swapped
            assert report.events == await conn.fetchval("SELECT count(*) FROM events")
            assert await leftovers(conn) == []
        finally:
            await conn.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_replay_after_any_arrival_order_gives_the_live_rows(
    services: ServiceUrls,
    template_database: str,
    case: tuple[list[Event], list[list[Event]]],
) -> None:
    # Arrival order, duplicates and batch cuts as the worker sees them; fetch_size=3 makes
    # tickets straddle the loader's chunks.
    _, batches = case
    asyncio.run(_replayed(services, template_database, batches))


async def test_replay_after_the_worker_gives_identical_rows(
    settings: Settings, db: asyncpg.Connection
) -> None:
    bodies = [body for number in range(12) for body in ticket_story(number)]
    await publish(settings, bodies)
    await drain(settings)
    assert await db.fetchval("SELECT count(*) FROM events") == len(bodies)
    before = await projection_rows(db)
    oids = await table_oids(db)

    report = await replay(settings.database_url, fetch_size=5)

    assert await projection_rows(db) == before
    assert report.differences == 0
    assert report.events == len(bodies)
    assert all(c.live_rows == c.rebuilt_rows > 0 for c in report.comparisons)
    new_oids = await table_oids(db)
    assert set(new_oids) == set(oids)
    assert all(new_oids[table] != oids[table] for table in oids)  # really swapped
    # The worker keeps writing into the swapped-in tables.
    await publish(settings, ticket_story(100))
    await drain(settings)
    assert await db.fetchval("SELECT count(*) FROM tickets") == 13


async def _tamper(db: asyncpg.Connection) -> None:
    await db.execute("UPDATE tickets SET subject = 'tampered' WHERE ticket_id = 3318841")
    await db.execute("DELETE FROM ticket_comments WHERE ticket_id = 3318842")
    await db.execute(
        "UPDATE tickets SET fold_state = fold_state || '\\x00'::bytea WHERE ticket_id = 3318843"
    )
    await db.execute(
        "INSERT INTO ticket_ratings (rating_id, ticket_id, rating) VALUES (1, 3318840, 5)"
    )


async def _recorded_stories(settings: Settings, db: asyncpg.Connection, count: int) -> None:
    """Tickets recorded as the worker records them (the queue itself is tested above)."""
    for number in range(count):
        await record(db, [decoded(json.loads(body)) for _, body in ticket_story(number)])


async def test_tampered_rows_are_repaired_and_reported_by_key(
    settings: Settings, db: asyncpg.Connection
) -> None:
    await _recorded_stories(settings, db, 5)
    before = await projection_rows(db)
    await _tamper(db)

    report = await replay(settings.database_url)

    assert await projection_rows(db) == before
    found = {c.table: c for c in report.comparisons}
    assert found["tickets"].keys == [("3318841", "changed"), ("3318843", "changed")]
    assert found["ticket_comments"].keys == [("412900873", "missing")]
    assert found["ticket_ratings"].keys == [("1", "unexpected")]
    assert found["ticket_status_changes"].differing == 0
    assert found["tickets"].live_rows == found["tickets"].rebuilt_rows == 5
    assert found["ticket_comments"].live_rows == 4
    assert report.differences == 4


async def test_dry_run_changes_nothing_and_reports(
    settings: Settings, db: asyncpg.Connection
) -> None:
    await _recorded_stories(settings, db, 5)
    await _tamper(db)
    tampered = await projection_rows(db)
    oids = await table_oids(db)

    status, out, err = await replay_process(settings, "--dry-run")

    assert status == 0, err
    assert "4 differences" in out
    assert "tickets: 2 changed (keys 3318841, 3318843)" in out
    assert "ticket_comments: 1 missing (keys 412900873)" in out
    assert "dry run, nothing swapped" in out
    assert '"event": "projection_difference"' in err
    assert await projection_rows(db) == tampered
    assert await table_oids(db) == oids
    assert await leftovers(db) == []


async def test_one_projection_only(settings: Settings, db: asyncpg.Connection) -> None:
    await _recorded_stories(settings, db, 5)
    before = await projection_rows(db)
    await _tamper(db)
    tampered = await projection_rows(db)
    oids = await table_oids(db)

    status, out, err = await replay_process(settings, "--projection", "ticket_comments")

    assert status == 0, err
    assert "1 differences" in out
    assert "swapped in: ticket_comments" in out
    rows = await projection_rows(db)
    assert rows["ticket_comments"] == before["ticket_comments"]
    assert rows["tickets"] == tampered["tickets"]
    assert rows["ticket_ratings"] == tampered["ticket_ratings"]
    new_oids = await table_oids(db)
    assert [t for t in oids if new_oids[t] != oids[t]] == ["ticket_comments"]


async def test_unknown_projection_is_refused_by_the_command(settings: Settings) -> None:
    status, _, err = await replay_process(settings, "--projection", "nope")
    assert status == 2
    assert "invalid choice" in err


async def _ticket_rows(db: asyncpg.Connection, tickets: list[int], inside: bool) -> Any:
    """Every projection's rows of `tickets` (inside) or of every other ticket."""
    rows = {}
    test = "" if inside else "NOT "
    for projection in ALL:
        key = PROJECTION_KEYS[projection.table]
        # Constant table and key names from the registry, never from input.
        found = await db.fetch(
            f"SELECT * FROM {projection.table} WHERE {test}(ticket_id = ANY($1::bigint[])) "
            f"ORDER BY {key}",
            tickets,
        )
        rows[projection.table] = [tuple(row.values()) for row in found]
    return rows


async def test_replay_of_tickets_restores_their_rows_only(
    settings: Settings, db: asyncpg.Connection
) -> None:
    await _recorded_stories(settings, db, 5)
    chosen = [3318840, 3318841, 3318842]
    before = await _ticket_rows(db, chosen, inside=True)
    await _tamper(db)  # 3318843's tampered row is not chosen: it must stay as it is
    others = await _ticket_rows(db, chosen, inside=False)
    tampered = await _ticket_rows(db, chosen, inside=True)
    assert tampered != before

    status, out, err = await replay_process(
        settings, "--ticket", "3318840", "--ticket", "3318841", "--ticket", "3318842", "--dry-run"
    )
    assert status == 0, err
    assert "3 differences" in out, out
    assert "dry run, nothing written" in out
    assert await _ticket_rows(db, chosen, inside=True) == tampered

    status, out, err = await replay_process(
        settings, "--ticket", "3318840", "--ticket", "3318841", "--ticket", "3318842"
    )

    assert status == 0, err
    assert out.startswith("replay: 12 events of tickets 3318840, 3318841, 3318842 in "), out
    assert "tickets: 1 changed (keys 3318841)" in out
    assert "ticket_comments: 1 missing (keys 412900873)" in out
    assert "ticket_ratings: 1 unexpected (keys 1)" in out
    assert await _ticket_rows(db, chosen, inside=True) == before
    assert await _ticket_rows(db, chosen, inside=False) == others

    status, out, err = await replay_process(settings, "--ticket", "3318841")
    assert status == 0, err
    assert "replay: 4 events of ticket 3318841 in " in out
    assert "; 0 differences; rows rewritten in: tickets, " in out


async def test_ticket_and_reprocess_rejected_are_refused_together(settings: Settings) -> None:
    status, _, err = await replay_process(settings, "--ticket", "1", "--reprocess-rejected")
    assert status == 2
    assert "--ticket does not apply to --reprocess-rejected" in err
    status, _, err = await replay_process(settings, "--ticket", "0")
    assert status == 2


async def test_a_second_replay_is_refused_while_one_runs(
    settings: Settings, db: asyncpg.Connection
) -> None:
    await _recorded_stories(settings, db, 1)
    holder = await asyncpg.connect(settings.database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", REPLAY_LOCK_KEY)
        pid = await holder.fetchval("SELECT pg_backend_pid()")
        status, _, err = await replay_process(settings)
        assert status == 3
        assert f"another `deskledger replay` is running (PostgreSQL backend pid {pid})" in err
        with pytest.raises(ReplayBusy):
            await replay(settings.database_url)
    finally:
        await holder.close()
    assert await leftovers(db) == []
    assert (await replay(settings.database_url)).swapped


SCHEMA_SHAPE = """
SELECT c.relname, i.indexname, i.indexdef, pg_get_userbyid(c.relowner) AS owner,
       c.relacl::text AS acl, c.reloptions::text AS storage_parameters
FROM pg_class AS c
LEFT JOIN pg_indexes AS i ON i.schemaname = 'public' AND i.tablename = c.relname
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
ORDER BY 1, 2
"""
CONSTRAINTS = """
SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2
"""


async def test_swap_keeps_index_names_constraints_storage_owner_and_grants(
    settings: Settings, db: asyncpg.Connection
) -> None:
    await _recorded_stories(settings, db, 2)
    role = f"dl_reader_{uuid.uuid4().hex[:8]}"
    await db.execute(f'CREATE ROLE "{role}"')
    try:
        await db.execute(f'GRANT SELECT ON tickets, ticket_comments TO "{role}"')
        shape = await db.fetch(SCHEMA_SHAPE)
        constraints = await db.fetch(CONSTRAINTS)
        await replay(settings.database_url)
        assert await db.fetch(SCHEMA_SHAPE) == shape
        assert await db.fetch(CONSTRAINTS) == constraints
        tickets = [row for row in shape if row["relname"] == "tickets"]
        assert tickets[0]["storage_parameters"] == "{toast_tuple_target=512,fillfactor=60}"
        assert await db.fetchval("SELECT has_table_privilege($1, 'public.tickets', 'SELECT')", role)
    finally:
        await db.execute(f'DROP OWNED BY "{role}"')
        await db.execute(f'DROP ROLE "{role}"')


async def test_a_view_on_a_live_table_stops_the_swap_cleanly(
    settings: Settings, db: asyncpg.Connection
) -> None:
    await _recorded_stories(settings, db, 2)
    await db.execute("CREATE VIEW open_tickets AS SELECT ticket_id FROM tickets")
    oids = await table_oids(db)
    status, _, err = await replay_process(settings)
    assert status == 1
    assert "cannot replace the live tables" in err
    assert "the live tables are unchanged" in err
    assert await table_oids(db) == oids
    assert await leftovers(db) == []


async def _postponed(logs: list[dict[str, object]], then: Callable[[], Awaitable[object]]) -> None:
    """Once the replay has logged that it postponed the swap, run `then`."""
    # Polled: the captured log list has nothing to wait on.
    while True:
        if any(line["event"] == "replay_swap_postponed" for line in logs):
            await then()
            return
        await asyncio.sleep(0.01)


async def test_a_long_reader_postpones_the_swap_which_then_goes_through(
    settings: Settings, db: asyncpg.Connection
) -> None:
    await _recorded_stories(settings, db, 2)
    before = await projection_rows(db)
    reader = await asyncpg.connect(settings.database_url)
    try:
        await reader.execute("BEGIN")
        await reader.fetch("SELECT count(*) FROM tickets")  # holds tickets until COMMIT
        with capture_logs() as logs:
            releasing = asyncio.create_task(_postponed(logs, lambda: reader.execute("COMMIT")))
            report = await replay(settings.database_url, lock_timeout=0.2)
            await releasing
    finally:
        await reader.close()
    assert report.swapped
    assert await projection_rows(db) == before


async def test_a_reader_that_never_lets_go_makes_the_replay_give_up_cleanly(
    settings: Settings, db: asyncpg.Connection
) -> None:
    await _recorded_stories(settings, db, 2)
    oids = await table_oids(db)
    reader = await asyncpg.connect(settings.database_url)
    try:
        await reader.execute("BEGIN")
        await reader.fetch("SELECT count(*) FROM ticket_ratings")
        with pytest.raises(RebuildError, match="could not be locked for the swap"):
            await replay(settings.database_url, lock_timeout=0.1, attempts=2)
        await reader.execute("COMMIT")
    finally:
        await reader.close()
    assert await table_oids(db) == oids
    assert await leftovers(db) == []
