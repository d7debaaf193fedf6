"""Reconcile's own tables (`shared/migrations/0004_reconcile.sql`) and what it reads of the
projections: passes, the watermark, the API's last word on each ticket, checked facts.

The watermark is the start of the last complete pass; it moves forward only, and only in the
transaction that marks a pass complete. A session advisory lock keeps two passes from running
at once on one database (api.md §3: never reconcile in parallel with itself on one token).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from shared.db import Conn

# pg_advisory_lock key of `reconcile`; any constant, kept forever.
RECONCILE_LOCK_KEY = 7_204_611_833_092_015

TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
UNLOCK = "SELECT pg_advisory_unlock($1)"
WATERMARK = "SELECT watermark FROM reconcile_watermark"
OLDEST_EVENT = "SELECT min(occurred_at) FROM events"
# Facts from before this cannot have been lost by webhooks: DeskLedger was not listening.
FIRST_WEBHOOK = "SELECT min(received_at) FROM deliveries WHERE source = 'webhook'"
INSERT_RUN = """
INSERT INTO reconcile_passes (pass_id, started_at, window_start, window_end, mode)
VALUES ($1, $2, $3, $4, $5)
"""
FINISH_RUN = """
UPDATE reconcile_passes
SET finished_at = now(),
    outcome = $2,
    offset_semantics = $3,
    tickets_listed = $4,
    tickets_fetched = $5,
    tickets_gone = $6,
    missing = $7::jsonb,
    corrections = $8,
    api_calls = $9,
    error = $10
WHERE pass_id = $1
"""
ADVANCE_WATERMARK = """
INSERT INTO reconcile_watermark (singleton, watermark, pass_id)
VALUES (true, $1, $2)
ON CONFLICT (singleton) DO UPDATE
SET watermark = EXCLUDED.watermark, pass_id = EXCLUDED.pass_id, updated_at = now()
WHERE reconcile_watermark.watermark < EXCLUDED.watermark
"""
LOCAL_TICKETS = """
SELECT
    l.ticket_id,
    t.status_id,
    t.assignee_id,
    t.suspected_gaps,
    r.last_updated_at AS api_last_updated_at,
    r.ticket_id IS NOT NULL AS read_before,
    coalesce(r.gone, false) AS gone
FROM unnest($1::bigint[]) AS l (ticket_id)
LEFT JOIN tickets AS t USING (ticket_id)
LEFT JOIN reconcile_tickets AS r USING (ticket_id)
"""
UNREAD_GAPS = """
SELECT t.ticket_id
FROM tickets AS t
LEFT JOIN reconcile_tickets AS r USING (ticket_id)
WHERE t.suspected_gaps > 0 AND r.ticket_id IS NULL
ORDER BY t.ticket_id
"""
PROJECTED = """
SELECT status_id, subject, client_id, assignee_id, group_id, channel_id, tags
FROM tickets
WHERE ticket_id = $1
"""
REMEMBER_TICKET = """
INSERT INTO reconcile_tickets (ticket_id, last_updated_at, read_at, gone, gone_reason)
VALUES ($1, $2, now(), $3, $4)
ON CONFLICT (ticket_id) DO UPDATE
SET last_updated_at = coalesce(EXCLUDED.last_updated_at, reconcile_tickets.last_updated_at),
    read_at = EXCLUDED.read_at,
    gone = EXCLUDED.gone,
    gone_reason = EXCLUDED.gone_reason
"""
CHECKED_FACTS = """
INSERT INTO reconcile_facts (
    type,
    source_id,
    ticket_id,
    occurred_at,
    missing,
    webhook_expected,
    pass_id
)
SELECT *
FROM unnest(
    $1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::boolean[], $6::boolean[],
    $7::uuid[]
)
ON CONFLICT ON CONSTRAINT reconcile_facts_pkey DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class Local:
    """What DeskLedger knows of a listed ticket."""

    ticket_id: int
    projected: bool
    status_id: int | None
    assignee_id: int | None
    suspected_gaps: int
    api_last_updated_at: str | None
    read_before: bool
    gone: bool


@dataclass(frozen=True, slots=True)
class CheckedFact:
    type: str
    source_id: str
    ticket_id: int
    occurred_at: datetime
    missing: bool
    webhook_expected: bool


async def try_lock(conn: Conn) -> bool:
    locked: bool = await conn.fetchval(TRY_LOCK, RECONCILE_LOCK_KEY)
    return locked


async def unlock(conn: Conn) -> None:
    await conn.execute(UNLOCK, RECONCILE_LOCK_KEY)


async def watermark(conn: Conn) -> datetime | None:
    value: datetime | None = await conn.fetchval(WATERMARK)
    return value


async def oldest_event(conn: Conn) -> datetime | None:
    value: datetime | None = await conn.fetchval(OLDEST_EVENT)
    return value


async def first_webhook(conn: Conn) -> datetime | None:
    value: datetime | None = await conn.fetchval(FIRST_WEBHOOK)
    return value


async def start_pass(
    conn: Conn, pass_id: UUID, started: datetime, start: datetime | None, mode: str
) -> None:
    await conn.execute(INSERT_RUN, pass_id, started, start, started, mode)


async def finish_pass(conn: Conn, pass_id: UUID, outcome: str, figures: dict[str, Any]) -> None:
    await conn.execute(
        FINISH_RUN,
        pass_id,
        outcome,
        figures["offset_semantics"],
        figures["tickets_listed"],
        figures["tickets_fetched"],
        figures["tickets_gone"],
        json.dumps(figures["missing"]),
        figures["corrections"],
        figures["api_calls"],
        figures["error"],
    )


async def advance_watermark(conn: Conn, to: datetime, pass_id: UUID) -> None:
    await conn.execute(ADVANCE_WATERMARK, to, pass_id)


async def local_tickets(conn: Conn, ticket_ids: Sequence[int]) -> dict[int, Local]:
    rows = await conn.fetch(LOCAL_TICKETS, list(ticket_ids))
    return {
        row["ticket_id"]: Local(
            ticket_id=row["ticket_id"],
            projected=row["suspected_gaps"] is not None,
            status_id=row["status_id"],
            assignee_id=row["assignee_id"],
            suspected_gaps=row["suspected_gaps"] or 0,
            api_last_updated_at=row["api_last_updated_at"],
            read_before=row["read_before"],
            gone=row["gone"],
        )
        for row in rows
    }


async def unread_gaps(conn: Conn) -> list[int]:
    return [row["ticket_id"] for row in await conn.fetch(UNREAD_GAPS)]


async def projected(conn: Conn, ticket_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(PROJECTED, ticket_id)
    if row is None:
        return None
    state = dict(row.items())
    state["tags"] = tuple(json.loads(state["tags"]))
    return state


async def remember_ticket(
    conn: Conn, ticket_id: int, last_updated_at: str | None, gone_reason: str | None = None
) -> None:
    await conn.execute(
        REMEMBER_TICKET, ticket_id, last_updated_at, gone_reason is not None, gone_reason
    )


async def checked(conn: Conn, facts: Sequence[CheckedFact], pass_id: UUID) -> None:
    if not facts:
        return
    await conn.execute(
        CHECKED_FACTS,
        [f.type for f in facts],
        [f.source_id for f in facts],
        [f.ticket_id for f in facts],
        [f.occurred_at for f in facts],
        [f.missing for f in facts],
        [f.webhook_expected for f in facts],
        [pass_id] * len(facts),
    )
