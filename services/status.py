"""`deskledger status`: is the pipeline keeping up? Queue depths, consumers, outcomes, event age."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import aio_pika
import aiormq
import asyncpg

from services import runner
from services.ingress import slot
from services.ingress.spool import spool_root
from shared.broker import TopologyNames
from shared.clock import Verdict, observed_offset
from shared.completeness import completeness
from shared.settings import Settings, settings_help

# Nothing here reads a whole table (issue 17): on a store of years `count(*)` over `events` or
# `deliveries` takes minutes. Row counts are the statistics PostgreSQL keeps anyway: the live
# tuples the statistics system counts on every insert (exact for the append-only `events` until
# a crash or a stats reset), or the planner's `reltuples`, whichever is larger. Exact figures
# come only through an index that bounds them: the last position, the newest event, the last
# hour's deliveries, rejected deliveries (up to REJECTED_CAP), tickets with suspected gaps.
DATABASE_FIGURES = """
SELECT
    (SELECT max(position) FROM events) AS last_position,
    (SELECT extract(epoch FROM now() - recorded_at) FROM events ORDER BY position DESC LIMIT 1)
        AS newest_event_age_s,
    (SELECT count(*) FROM tickets WHERE suspected_gaps > 0) AS tickets_with_gaps,
    (SELECT coalesce(sum(suspected_gaps), 0) FROM tickets WHERE suspected_gaps > 0)
        AS suspected_gaps,
    (SELECT count(*) FROM (
        SELECT 1 FROM deliveries WHERE outcome = 'rejected' LIMIT $1
    ) AS capped) AS rejected
"""
ESTIMATED_ROWS = """
SELECT
    c.relname AS name,
    greatest(coalesce(s.n_live_tup, 0), c.reltuples, 0)::bigint AS estimate
FROM pg_class AS c
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.oid IN ('events'::regclass, 'deliveries'::regclass, 'tickets'::regclass)
"""
# The share of each outcome among `deliveries`, as of the last ANALYZE (autovacuum runs it).
OUTCOME_SHARES = """
SELECT
    unnest(most_common_vals::text::text[]) AS outcome,
    unnest(most_common_freqs) AS share
FROM pg_stats
WHERE schemaname = current_schema() AND tablename = 'deliveries' AND attname = 'outcome'
"""
LAST_HOUR = """
SELECT outcome, count(*) AS n
FROM deliveries
WHERE received_at > now() - interval '1 hour'
GROUP BY outcome
ORDER BY outcome
"""
REJECTED_CAP = 10_000


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status",
        help="queue depths, consumers, deliveries by outcome, the age of the newest event",
        description=(
            "Show whether DeskLedger keeps up: the webhook queue's depth and consumer count, "
            "the dead-letter queue's depth, deliveries by outcome, events stored and the age of "
            "the newest one, and suspected gaps (lost webhooks). Exit 0 when both RabbitMQ and "
            "PostgreSQL answered, 1 otherwise (what could be read is still shown). The ingress's "
            "spool (bytes, webhooks not yet forwarded, the oldest one's age, forwarded, failed) is "
            "read from the files under DESKLEDGER_SPOOL_DIR, so run it on the ingress's machine "
            "(or in its container) to see it."
        ),
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


async def broker_figures(settings: Settings) -> dict[str, Any]:
    names = TopologyNames.for_prefix(settings.amqp_prefix)
    figures: dict[str, Any] = {}
    connection = await aio_pika.connect(settings.amqp_url, timeout=5)
    async with connection:
        for label, queue_name in (
            ("queue", names.queue),
            ("dead_letter_queue", names.dead_letter_queue),
        ):
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(queue_name, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                figures[label] = {"name": queue_name, "missing": True}
                continue
            result = queue.declaration_result
            figures[label] = {
                "name": queue_name,
                "messages": result.message_count,
                "consumers": result.consumer_count,
            }
            await channel.close()
    return figures


def _clock_figures(clock: Verdict | None, settings: Settings) -> dict[str, Any]:
    """Whether DESKLEDGER_SOURCE_TIMEZONE fits UseDesk's clock (docs/semantics.md)."""
    configured = str(settings.source_timezone)
    if clock is None:
        return {"configured": configured, "line": f"{configured} (no webhooks to check it yet)"}
    agrees = "disagrees" if clock.wrong else "agrees"
    line = (
        f"{configured} {agrees}: UseDesk's dates are {clock.offset / 3600:+.2f} h from UTC "
        f"over {clock.samples} recent webhooks"
        + (f"; {clock.fits} fits (set it, then `deskledger replay`)" if clock.wrong else "")
    )
    return {
        "configured": configured,
        "observed_offset_s": round(clock.offset),
        "samples": clock.samples,
        "wrong": clock.wrong,
        "fits": clock.fits,
        "line": line,
    }


async def database_figures(settings: Settings) -> dict[str, Any]:
    conn = await asyncpg.connect(settings.database_url, timeout=5)
    try:
        row = await conn.fetchrow(DATABASE_FIGURES, REJECTED_CAP + 1)
        estimates = {r["name"]: r["estimate"] for r in await conn.fetch(ESTIMATED_ROWS)}
        shares = {r["outcome"]: r["share"] for r in await conn.fetch(OUTCOME_SHARES)}
        last_hour = {r["outcome"]: r["n"] for r in await conn.fetch(LAST_HOUR)}
        webhooks = await completeness(conn)
        clock = await observed_offset(conn, settings.source_timezone)
    finally:
        await conn.close()
    assert row is not None
    figures = dict(row.items())
    age = figures["newest_event_age_s"]
    figures["newest_event_age_s"] = None if age is None else round(float(age), 1)
    figures["events_estimate"] = estimates.get("events", 0)
    figures["tickets_estimate"] = estimates.get("tickets", 0)
    total = estimates.get("deliveries", 0)
    figures["deliveries_estimate"] = {
        "total": total,
        "by_outcome": {o: round(total * share) for o, share in sorted(shares.items())},
    }
    figures["deliveries_last_hour"] = last_hour
    figures["rejected_capped"] = figures["rejected"] > REJECTED_CAP
    figures["rejected"] = min(figures["rejected"], REJECTED_CAP)
    figures["source_clock"] = _clock_figures(clock, settings)
    figures["webhook_completeness"] = {
        "ratio": webhooks.ratio,
        "days": webhooks.days,
        "by_type": {t: {"facts": f, "missing": m} for t, (f, m) in webhooks.by_type.items()},
        "last_complete_reconcile": webhooks.last_complete_pass,
        "line": webhooks.line(),
    }
    return figures


async def gather(settings: Settings) -> tuple[dict[str, Any], bool]:
    report: dict[str, Any] = {"amqp_prefix": settings.amqp_prefix}
    if settings.spool_dir is not None:
        report["spool"] = slot.figures(spool_root(settings.spool_dir, settings.amqp_prefix))
    ok = True
    try:
        report["broker"] = await broker_figures(settings)
    except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
        report["broker"] = {"error": f"RabbitMQ at {settings.safe_amqp_url}: {exc!r}"}
        ok = False
    try:
        report["database"] = await database_figures(settings)
    except asyncpg.UndefinedTableError:
        report["database"] = {"error": "the schema is missing: run `deskledger migrate`"}
        ok = False
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        report["database"] = {"error": f"PostgreSQL at {settings.safe_database_url}: {exc!r}"}
        ok = False
    return report, ok


def render(report: dict[str, Any]) -> str:
    lines: list[str] = []
    broker = report["broker"]
    if "error" in broker:
        lines.append(f"broker     unreachable: {broker['error']}")
    for label in ("queue", "dead_letter_queue"):
        queue = broker.get(label)
        if queue is None:
            continue
        if queue.get("missing"):
            lines.append(f"{label:<18} {queue['name']}: not declared yet (start ingress/worker)")
        else:
            lines.append(
                f"{label:<18} {queue['name']}: {queue['messages']} messages, "
                f"{queue['consumers']} consumers"
            )
    spool = report.get("spool")
    if spool is not None:
        age = spool["oldest_record_age_s"]
        lines.append(
            f"{'spool':<18} {spool['dir']}: {spool['records']} webhooks not yet forwarded"
            f" ({spool['bytes']} bytes, {spool['slots']} slots"
            + (f", oldest {age} s ago" if age is not None else "")
            + f"); forwarded {spool['forwarded']}, failed {spool['failed']}"
        )
    database = report["database"]
    if "error" in database:
        lines.append(f"database   unreachable: {database['error']}")
        return "\n".join(lines)
    lines += _database_lines(database)
    lines += [
        f"webhook completeness {database['webhook_completeness']['line']}",
        f"{'source timezone':<18} {database['source_clock']['line']}",
    ]
    return "\n".join(lines)


def _database_lines(database: dict[str, Any]) -> list[str]:
    estimate = database["deliveries_estimate"]
    shares = ", ".join(f"{k} ~{v}" for k, v in estimate["by_outcome"].items())
    last_hour = ", ".join(f"{k} {v}" for k, v in database["deliveries_last_hour"].items())
    rejected = ("more than " if database["rejected_capped"] else "") + str(database["rejected"])
    age = database["newest_event_age_s"]
    return [
        f"{'deliveries':<18} ~{estimate['total']}" + (f" ({shares})" if shares else ""),
        f"{'  last hour':<18} {last_hour or 'none'}; rejected in all: {rejected}",
        f"{'events':<18} ~{database['events_estimate']} "
        f"(last position {database['last_position']})",
        f"{'newest event':<18} " + ("none yet" if age is None else f"{age} s ago"),
        f"{'tickets':<18} ~{database['tickets_estimate']} ({database['suspected_gaps']} "
        f"suspected gaps on {database['tickets_with_gaps']} tickets)",
    ]


def run(args: argparse.Namespace, settings: Settings) -> int:
    return runner.run_loop(_status(settings, as_json=args.json))


async def _status(settings: Settings, as_json: bool) -> int:
    report, ok = await gather(settings)
    print(json.dumps(report, default=str) if as_json else render(report))
    if not ok:
        print("deskledger status: some figures could not be read (see above)", file=sys.stderr)
    return 0 if ok else 1
