"""`events.data` as json (migration 0006): old rows keep decoding, both read paths agree, and the
jsonb operators stay one view away."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest

from shared import eventstore
from shared.db import MIGRATIONS_DIR, migrate
from shared.events import Event, encode_event
from tests.benchmarks.replay import base_events

JSON_MIGRATION = "0006_events_data_json.sql"
INSERT_JSONB = """
INSERT INTO events (ticket_id, type, source_id, occurred_at, data, delivery_id)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[],
    $6::uuid[])
"""


@pytest.fixture(scope="module")
def events() -> list[Event]:
    """A few hundred corpus events of every type, several per ticket."""
    return base_events(300)


async def _read_all(conn: asyncpg.Connection) -> list[Event]:
    return [s.event async for chunk in eventstore.read_all(conn) for s in chunk]


async def test_rows_stored_as_jsonb_decode_after_the_migration(
    fresh_url: str, tmp_path: Path, events: list[Event]
) -> None:
    before = tmp_path / "migrations"
    before.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if path.name < JSON_MIGRATION:
            shutil.copy(path, before)
    await migrate(fresh_url, before)
    conn = await asyncpg.connect(fresh_url)
    try:
        assert (
            await conn.fetchval(
                "SELECT format_type(atttypid, NULL) FROM pg_attribute "
                "WHERE attrelid = 'events'::regclass AND attname = 'data'"
            )
            == "jsonb"
        )
        await conn.execute(
            INSERT_JSONB,
            [e.ticket_id for e in events],
            [e.type for e in events],
            [e.source_id for e in events],
            [e.occurred_at for e in events],
            [encode_event(e).decode() for e in events],
            [uuid.uuid4() for _ in events],
        )
        assert JSON_MIGRATION in await migrate(fresh_url)
        assert (
            await conn.fetchval(
                "SELECT format_type(atttypid, NULL) FROM pg_attribute "
                "WHERE attrelid = 'events'::regclass AND attname = 'data'"
            )
            == "json"
        )
        # jsonb's rendering of each old row is the text now: it decodes to the same event.
        assert await _read_all(conn) == events
        await eventstore.raw_json(conn)
        assert await _read_all(conn) == events
    finally:
        await conn.close()


async def test_raw_json_connection_appends_and_reads_bytes(
    database_url: str, events: list[Event]
) -> None:
    raw = await asyncpg.connect(database_url)
    plain = await asyncpg.connect(database_url)
    try:
        await eventstore.raw_json(raw)
        async with raw.transaction():
            await eventstore.lock_appends(raw)
            stored = await eventstore.append(
                raw, [eventstore.NewEvent(e, uuid.uuid4()) for e in events]
            )
        assert [s.event for s in stored] == events
        row = await raw.fetchrow(eventstore.READ_TICKET, events[0].ticket_id)
        assert row is not None
        assert isinstance(row["data"], bytes)
        assert row["data"] == encode_event(events[0])
        row = await plain.fetchrow(eventstore.READ_TICKET, events[0].ticket_id)
        assert row is not None
        assert isinstance(row["data"], str)
        assert await _read_all(raw) == await _read_all(plain) == events
    finally:
        await raw.close()
        await plain.close()


async def test_data_queryable_as_json_and_through_the_jsonb_view(
    db: asyncpg.Connection, events: list[Event]
) -> None:
    async with db.transaction():
        await eventstore.lock_appends(db)
        await eventstore.append(db, [eventstore.NewEvent(e, uuid.uuid4()) for e in events])
    ticket = events[0].ticket_id
    expected = sum(1 for e in events if e.ticket_id == ticket)
    assert expected > 0
    by_operator = await db.fetchval(
        "SELECT count(*) FROM events WHERE (data->>'ticket_id')::bigint = $1", ticket
    )
    by_view = await db.fetchval(
        "SELECT count(*) FROM events_jsonb "
        "WHERE data @> jsonb_build_object('ticket_id', $1::bigint)",
        ticket,
    )
    assert by_operator == by_view == expected
    assert await db.fetchval("SELECT count(*) FROM events_jsonb WHERE data ? 'schema'") == len(
        events
    )
