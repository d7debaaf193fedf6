"""Running `replay` in tests (in-process or as a subprocess), and what its tests compare."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from services.replay.rebuild import Rebuild, RebuildOptions, RebuildReport
from shared.events import decode_event
from shared.projections import ALL, BY_NAME
from shared.recording import record
from shared.settings import Settings
from shared.usedesk import Kind
from tests.helpers.deliveries import STORY, STORY_KINDS, fixture
from tests.helpers.histories import as_decoded
from tests.helpers.services import ServiceUrls, database_from_template, deskledger
from tests.integration.test_projection_order import projection_rows

__all__ = ["projection_rows"]

TABLE_OIDS = """
SELECT c.relname, c.oid
FROM pg_class AS c
WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY($1::text[])
"""
LEFTOVER_SCHEMAS = "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'deskledger%'"


async def replay(database_url: str, *names: str, **options: Any) -> RebuildReport:
    """`deskledger replay [--projection NAME ...]` in this process."""
    projections = tuple(BY_NAME[name] for name in names) if names else ALL
    return await Rebuild(database_url, RebuildOptions(projections, **options)).run()


async def replay_process(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """`python -m services replay ARGS`; returns (exit status, stdout, stderr)."""
    process = await deskledger(settings, "replay", *args, extra_env=env)
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def table_oids(conn: asyncpg.Connection) -> dict[str, int]:
    """The live projection tables' identities: a swap replaces them, anything else does not."""
    rows = await conn.fetch(TABLE_OIDS, [p.table for p in ALL])
    return {row["relname"]: row["oid"] for row in rows}


async def leftovers(conn: asyncpg.Connection) -> list[str]:
    return [row["nspname"] for row in await conn.fetch(LEFTOVER_SCHEMAS)]


async def in_order_rows(
    services: ServiceUrls, template: str, source: asyncpg.Connection
) -> dict[str, list[Any]]:
    """The projection rows of `source`'s events recorded in position order into a fresh store."""
    rows = await source.fetch("SELECT data::text AS data FROM events ORDER BY position")
    events = [decode_event(row["data"]) for row in rows]
    async with database_from_template(services, template, prefix="dl_replay") as url:
        conn = await asyncpg.connect(url)
        try:
            for start in range(0, len(events), 100):
                await record(conn, [as_decoded(e) for e in events[start : start + 100]])
            return await projection_rows(conn)
        finally:
            await conn.close()


def _shift(payload: dict[str, Any], section: str, fields: tuple[str, ...], by: int) -> None:
    for name in fields:
        value = payload[section].get(name)
        if value is not None:
            payload[section][name] = type(value)(int(value) + by)


def ticket_story(number: int) -> list[tuple[Kind, bytes]]:
    """The fixture story, moved to ticket 3318840 + `number` with its own ids."""
    shifts = {
        "ticket_created.json": ("ticket", ("id",)),
        "comment_created.json": ("comment", ("id", "ticket_id")),
        "ticket_changed.json": ("trigger", ("id", "ticket_id")),
        "rating.json": ("csi", ("id", "ticket_id", "ticket_comment_id")),
    }
    story = []
    for name in STORY:
        payload = fixture(name)
        section, fields = shifts[name]
        _shift(payload, section, fields, number)
        story.append((STORY_KINDS[name], json.dumps(payload).encode()))
    return story
