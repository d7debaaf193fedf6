"""`deskledger ticket ID`: everything known about one ticket, the first thing to look at when a
number looks wrong: its deliveries, its events in order with their source, its projection rows,
its suspected gaps."""

from __future__ import annotations

import argparse
import json
from typing import Any

import asyncpg

from services import runner
from shared import eventstore
from shared.db import Conn
from shared.projections import ALL, tickets
from shared.projections.base import fold_into
from shared.settings import Settings, settings_help

# Deliveries are found through their events (`events.delivery_id`, by the primary key): a
# delivery that made no event of this ticket (a duplicate, a rejection, an ignored kind) names
# the ticket only inside its body, and searching bodies means reading every delivery.
DELIVERIES = """
SELECT
    delivery_id,
    received_at,
    kind,
    outcome,
    error,
    processed_at
FROM deliveries
WHERE delivery_id = ANY($1::uuid[])
ORDER BY received_at, delivery_id
"""
NOT_FOUND = (
    "deliveries that made no event of this ticket (duplicates, rejected, ignored) are not "
    "listed: they name the ticket only in their body; rejected ones: "
    "SELECT delivery_id, error FROM deliveries WHERE outcome = 'rejected'"
)
# The projection tables come from shared.projections (constants, never input); each has a
# ticket_id column. fold_state is the fold's private bookkeeping, not a reading.
ROWS = {
    projection.table: f"SELECT to_jsonb(t) - 'fold_state' AS row FROM {projection.table} AS t "
    "WHERE ticket_id = $1"
    for projection in ALL
}


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "ticket",
        help="one ticket: its deliveries, its events with their source, its projection rows, "
        "its suspected gaps",
        description=(
            "Show everything DeskLedger knows about one ticket: the deliveries that made its "
            "events (outcome, error), its events in store order with their source (webhook or "
            "api), its rows in every projection table, and its suspected gaps (a change whose "
            "old value is not what the events before it left: a lost webhook). Reads only this "
            "ticket's rows, by index."
        ),
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ticket_id", type=int, metavar="ID", help="UseDesk's ticket id")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return runner.run_loop(_ticket(settings, args.ticket_id, args.json))


async def _ticket(settings: Settings, ticket_id: int, as_json: bool) -> int:
    conn = await asyncpg.connect(settings.database_url, timeout=5)
    try:
        report = await gather(conn, ticket_id, settings)
    finally:
        await conn.close()
    print(json.dumps(report, default=str, ensure_ascii=False) if as_json else render(report))
    return 0 if report["events"] or any(report["projections"].values()) else 1


async def gather(conn: Conn, ticket_id: int, settings: Settings) -> dict[str, Any]:
    log = await eventstore.ticket_log(conn, ticket_id)
    ids = sorted({row["delivery_id"] for row in log})
    deliveries = [dict(row.items()) for row in await conn.fetch(DELIVERIES, ids)]
    projections = {
        table: [json.loads(row["row"]) for row in await conn.fetch(sql, ticket_id)]
        for table, sql in ROWS.items()
    }
    return {
        "ticket_id": ticket_id,
        "deliveries": deliveries,
        "deliveries_not_found": NOT_FOUND,
        "events": log,
        "projections": projections,
        "suspected_gaps": await _gaps(conn, ticket_id, settings, log),
    }


async def _gaps(
    conn: Conn, ticket_id: int, settings: Settings, log: list[dict[str, Any]]
) -> list[dict[str, str]]:
    """The ticket's gaps, folded again from its events as the worker and the replay fold them."""
    stored = await eventstore.read_ticket(conn, ticket_id, settings.source_timezone)
    states: dict[int, tickets.TicketState] = {}
    fold_into(tickets.PROJECTION, states, stored)
    if ticket_id not in states:
        return []
    names = {f"{row['type']}:{row['source_id']}" for row in log}
    found = tickets.suspected_gaps(states[ticket_id], names)
    return [{"field": f, "previous_event": before, "event": after} for f, before, after in found]


def render(report: dict[str, Any]) -> str:
    lines = [f"ticket {report['ticket_id']}"]
    lines.append(f"events ({len(report['events'])}, in store order)")
    for e in report["events"]:
        lines.append(
            f"  {e['position']:>10}  {e['type']:<16} {e['source_id']:<22} {e['source']:<8}"
            f" occurred {e['occurred_at']:%Y-%m-%d %H:%M:%S%z}  delivery {e['delivery_id']}"
        )
    lines.append(f"deliveries ({len(report['deliveries'])} that made these events)")
    for d in report["deliveries"]:
        error = f"  error: {d['error']}" if d["error"] else ""
        lines.append(
            f"  {d['delivery_id']}  {d['received_at']:%Y-%m-%d %H:%M:%S%z}  {d['kind']:<16}"
            f" {d['outcome']}{error}"
        )
    lines.append(f"  ({report['deliveries_not_found']})")
    for table, rows in report["projections"].items():
        lines.append(f"{table} ({len(rows)} rows)")
        lines += [f"  {json.dumps(row, ensure_ascii=False, sort_keys=True)}" for row in rows]
    gaps = report["suspected_gaps"]
    lines.append(f"suspected gaps ({len(gaps)})")
    lines += [
        f"  {g['field']}: {g['event']} does not follow from {g['previous_event']}" for g in gaps
    ]
    return "\n".join(lines)
