"""`deskledger status` on a big store reads statistics and indexes, not whole tables (issue 17)."""

from __future__ import annotations

import asyncio

import asyncpg

from services.status import gather, render
from shared.settings import Settings

ROWS = 20_000
TABLES = ("events", "deliveries", "tickets")
READ = """
SELECT
    relname,
    coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) AS tuples,
    coalesce(seq_scan, 0) + coalesce(idx_scan, 0) AS scans
FROM pg_stat_user_tables
WHERE relname = ANY($1::text[])
"""


async def _read(db: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    await db.execute("SELECT pg_stat_clear_snapshot()")
    return {r["relname"]: (r["tuples"], r["scans"]) for r in await db.fetch(READ, list(TABLES))}


async def _fill(db: asyncpg.Connection) -> None:
    await db.execute(
        """
        INSERT INTO deliveries (delivery_id, received_at, kind, content_type, body, outcome, error)
        SELECT gen_random_uuid(), now() - interval '2 days', 'ticket_changed', 'application/json',
               '\\x7b7d', CASE WHEN i % 1000 = 0 THEN 'rejected' ELSE 'recorded' END,
               CASE WHEN i % 1000 = 0 THEN 'bad' END
        FROM generate_series(1, $1) AS i
        """,
        ROWS,
    )
    await db.execute(
        """
        INSERT INTO events (ticket_id, type, source_id, occurred_at, data, delivery_id)
        SELECT i % 500, 'ticket_changed', i::text, now(), '{}', gen_random_uuid()
        FROM generate_series(1, $1) AS i
        """,
        ROWS,
    )
    # This backend's insert counts reach the statistics before ANALYZE resets them (else they
    # would be added twice, a test artefact: in service, other backends insert).
    await db.execute("SELECT pg_stat_force_next_flush()")
    await asyncio.sleep(0.2)
    await db.execute("ANALYZE deliveries")
    await db.execute("ANALYZE events")


async def test_status_estimates_counts_and_reads_only_what_indexes_bound(
    settings: Settings, db: asyncpg.Connection
) -> None:
    await _fill(db)
    await asyncio.sleep(0.2)
    before = await _read(db)
    report, _ = await gather(settings)
    after = before
    for _ in range(50):  # status's backend flushes its statistics when it exits
        await asyncio.sleep(0.1)
        after = await _read(db)
        if after["events"][1] > before["events"][1]:
            break
    assert after["events"][1] > before["events"][1], "status's reads were never counted"
    read = {table: after[table][0] - before[table][0] for table in TABLES}
    # The source-clock check reads the newest 500 events (shared/clock.py), by position.
    assert read["events"] <= 510, read
    assert read["deliveries"] <= ROWS // 1000 + 10, read  # the rejected ones, by their index
    database = report["database"]
    assert database["events_estimate"] == ROWS
    assert database["deliveries_estimate"]["total"] == ROWS
    assert database["deliveries_estimate"]["by_outcome"]["recorded"] > ROWS * 0.9
    assert database["rejected"] == ROWS // 1000
    assert database["deliveries_last_hour"] == {}
    assert f"~{ROWS}" in render(report)
