"""`deskledger replay --ticket ID`: rebuild a few tickets' rows in every projection.

For each ticket, its events (in position order) are folded with the projections' own functions,
as the full replay folds the whole store. Then, in ONE transaction that first takes the append
lock (so no worker adds an event of the ticket meanwhile, and the events read are all there
is): read the ticket's live rows, delete them from every projection table (each has a
`ticket_id` column), insert the folded rows with each projection's upsert, and read the rows
again. The two readings, matched by primary key, are the differences (`missing`: the events
call for a row the table lacked, `unexpected`: a row no event calls for, `changed`). A dry run
does the same work and rolls it back. Other tickets' rows are never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from services.replay.comparison import KINDS, Kind
from services.replay.locks import connect, milliseconds
from shared import eventstore
from shared.db import Conn
from shared.projections.base import Projection, fold_into, rows_of

log = structlog.get_logger()

SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', $1, true)"


def _rows_sql(projection: Projection[Any, Any]) -> str:
    # Table and key names come from the projection registry (constants, never input).
    keys = ", ".join(projection.definition.key)
    return (
        f"SELECT ({keys})::text AS key, to_jsonb(t)::text AS row "
        f"FROM {projection.table} AS t WHERE ticket_id = $1"
    )


def _delete_sql(projection: Projection[Any, Any]) -> str:
    return f"DELETE FROM {projection.table} WHERE ticket_id = $1"


@dataclass
class TicketComparison:
    """One table's differences over the replayed tickets, as the full replay reports them."""

    table: str
    counts: dict[Kind, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    keys: list[tuple[str, Kind]] = field(default_factory=list)

    @property
    def differing(self) -> int:
        return sum(self.counts.values())

    def add(self, before: dict[str, str], after: dict[str, str]) -> None:
        for key in sorted(before.keys() | after.keys()):
            kind: Kind | None = None
            if key not in before:
                kind = "missing"
            elif key not in after:
                kind = "unexpected"
            elif before[key] != after[key]:
                kind = "changed"
            if kind is not None:
                self.counts[kind] += 1
                self.keys.append((key, kind))


@dataclass
class TicketReplayReport:
    tickets: tuple[int, ...]
    events: int = 0
    comparisons: list[TicketComparison] = field(default_factory=list)
    written: bool = False

    @property
    def differences(self) -> int:
        return sum(c.differing for c in self.comparisons)


async def _rows(conn: Conn, projection: Projection[Any, Any], ticket_id: int) -> dict[str, str]:
    return {r["key"]: r["row"] for r in await conn.fetch(_rows_sql(projection), ticket_id)}


async def _replay_one(
    conn: Conn,
    projections: Sequence[Projection[Any, Any]],
    ticket_id: int,
    tz: ZoneInfo,
    report: TicketReplayReport,
) -> None:
    stored = await eventstore.read_ticket(conn, ticket_id, tz=tz)
    report.events += len(stored)
    for projection, comparison in zip(projections, report.comparisons, strict=True):
        states: dict[Any, Any] = {}
        fold_into(projection, states, stored)
        rows = rows_of(projection, [states[key] for key in sorted(states)])
        before = await _rows(conn, projection, ticket_id)
        await conn.execute(_delete_sql(projection), ticket_id)
        if rows:
            columns = [list(column) for column in zip(*rows, strict=True)]
            await conn.execute(projection.upsert_sql, *columns)
        comparison.add(before, await _rows(conn, projection, ticket_id))


async def replay_tickets(
    database_url: str,
    projections: Sequence[Projection[Any, Any]],
    ticket_ids: Sequence[int],
    *,
    tz: ZoneInfo,
    dry_run: bool,
    lock_timeout: float,
) -> TicketReplayReport:
    """Rebuild `ticket_ids`' rows in `projections` (dry run: compare, then roll back)."""
    report = TicketReplayReport(tuple(dict.fromkeys(ticket_ids)))
    report.comparisons = [TicketComparison(p.table) for p in projections]
    conn = await connect(database_url)
    try:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute(SET_LOCK_TIMEOUT, milliseconds(lock_timeout))
            await eventstore.lock_appends(conn)
            for ticket_id in report.tickets:
                await _replay_one(conn, projections, ticket_id, tz, report)
        except BaseException:
            await transaction.rollback()
            raise
        if dry_run:
            await transaction.rollback()
        else:
            await transaction.commit()
            report.written = True
    finally:
        await conn.close()
    for comparison in report.comparisons:
        for key, kind in comparison.keys:
            log.info("projection_difference", table=comparison.table, key=key, kind=kind)
    return report
