"""`deskledger migrate`: from zero, idempotent, refuses changed files, safe concurrently."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from shared.db import MIGRATIONS_DIR, load_migrations, migrate
from shared.errors import MigrationError


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {row["tablename"] for row in rows}


async def test_migrate_creates_database_and_tables(fresh_url: str) -> None:
    applied = await migrate(fresh_url)
    assert applied == [m.name for m in load_migrations()]
    assert {"deliveries", "events", "schema_migrations"} <= await _tables(fresh_url)


async def test_second_migrate_is_a_no_op(fresh_url: str) -> None:
    await migrate(fresh_url)
    conn = await asyncpg.connect(fresh_url)
    try:
        before = await conn.fetch("SELECT name, checksum, applied_at FROM schema_migrations")
        assert await migrate(fresh_url) == []
        after = await conn.fetch("SELECT name, checksum, applied_at FROM schema_migrations")
    finally:
        await conn.close()
    assert before == after


async def test_changed_applied_file_is_refused(fresh_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    await migrate(fresh_url, directory)
    first = sorted(directory.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after the fact\n")
    with pytest.raises(MigrationError, match=f"{first.name} was changed"):
        await migrate(fresh_url, directory)


async def test_concurrent_migrates_apply_each_file_once(fresh_url: str) -> None:
    results = await asyncio.gather(*(migrate(fresh_url) for _ in range(4)))
    applied = sorted(name for result in results for name in result)
    assert applied == sorted(m.name for m in load_migrations())


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET ticket_id = 2",
        "DELETE FROM events",
        "TRUNCATE events",
    ],
)
async def test_events_are_append_only(db: asyncpg.Connection, statement: str) -> None:
    await db.execute(
        """
        INSERT INTO events (ticket_id, type, source_id, occurred_at, data, delivery_id)
        VALUES (1, 'ticket_created', '1', now(), '{}', gen_random_uuid())
        """
    )
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await db.execute(statement)
    assert await db.fetchval("SELECT count(*) FROM events") == 1


async def test_event_source_ids_are_unique_per_type(db: asyncpg.Connection) -> None:
    insert = """
        INSERT INTO events (ticket_id, type, source_id, occurred_at, data, delivery_id)
        VALUES (1, $1, '77', now(), '{}', gen_random_uuid())
    """
    await db.execute(insert, "ticket_created")
    await db.execute(insert, "comment_created")
    with pytest.raises(asyncpg.UniqueViolationError, match="events_type_source_id_key"):
        await db.execute(insert, "ticket_created")


def test_cli_migrate_twice_against_a_missing_database(fresh_url: str) -> None:
    env = {"DATABASE_URL": fresh_url, "PATH": "/usr/bin:/bin", "DESKLEDGER_LOG_FORMAT": "json"}
    command = [sys.executable, "-m", "services", "migrate"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert '"event": "database_created"' in first.stderr
    second = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert second.returncode == 0, second.stderr
    assert '"count": 0' in second.stderr
