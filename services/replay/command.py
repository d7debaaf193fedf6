"""`deskledger replay`: rebuild projections from the event store; reprocess rejected deliveries."""

from __future__ import annotations

import argparse
import time
from typing import Any

import structlog

from services import runner
from services.replay.comparison import TableComparison
from services.replay.rebuild import Rebuild, RebuildOptions, RebuildReport
from services.replay.reprocessing import Reprocessing, ReprocessReport
from services.replay.tickets import TicketComparison, TicketReplayReport, replay_tickets
from services.runner import positive_float, positive_int
from shared.projections import ALL, BY_NAME
from shared.settings import Settings, settings_help

log = structlog.get_logger()

SHOWN_KEYS = 5

DESCRIPTION = """\
Rebuild the ticket projections from the event store, safely while ingress and workers run.

The rebuilt tables are built beside the live ones (schema deskledger_rebuild) from one snapshot
of the store, caught up with the events appended meanwhile, compared with the live tables row
for row (the differing keys are logged and summed up), then swapped in by one short transaction
that holds the append lock, so no event is missed or applied twice. Until that transaction
commits the live tables are untouched: a replay that fails or is killed leaves them as they
were, and the next replay removes whatever it left behind. One replay runs at a time.

With --reprocess-rejected, decode again the deliveries whose outcome is `rejected` (after a
decoder fix): those that decode now become events (or duplicates of stored ones) and update
the projections; those that still fail keep the outcome with their new error.

With --ticket ID (repeatable), rebuild only those tickets' rows: their events are folded again
and, in one transaction that holds the append lock, their rows in every projection table are
deleted and the folded ones written; the differences are reported as above. Other tickets'
rows are not touched.
"""
EPILOG = """\
exit status: 0 done (differences found were repaired, or only reported with --dry-run),
  1 the replay could not finish (the live tables are unchanged; the message says why),
  2 bad arguments, 3 another replay is running.

"""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "replay",
        help="rebuild projections from the event store (safe while workers run); "
        "reprocess rejected deliveries",
        description=DESCRIPTION,
        epilog=EPILOG + settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--projection",
        action="append",
        choices=sorted(BY_NAME),
        metavar="NAME",
        help=f"rebuild only this projection (repeat for several): {', '.join(BY_NAME)}; "
        "default: all of them",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="build and compare, report the differences, change nothing (the rebuilt tables "
        "are dropped); with --reprocess-rejected: decode only and report what would happen",
    )
    parser.add_argument(
        "--reprocess-rejected",
        action="store_true",
        help="decode the rejected deliveries again and record what they now yield, instead of "
        "rebuilding",
    )
    parser.add_argument(
        "--ticket",
        action="append",
        type=positive_int,
        metavar="ID",
        help="rebuild only this ticket's rows (repeat for several), in one short transaction; "
        "default: the whole store",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help="events per cursor fetch when rebuilding (default 2000); deliveries per "
        "transaction when reprocessing (default 500)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=positive_float,
        default=2.0,
        metavar="SECONDS",
        help="longest wait for the append lock or a live table's lock (default 2); workers and "
        "readers wait at most this long for the replay, which retries after a catch-up",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.reprocess_rejected and args.projection:
        return runner.refused("replay", "--projection does not apply to --reprocess-rejected")
    if args.reprocess_rejected and args.ticket:
        return runner.refused("replay", "--ticket does not apply to --reprocess-rejected")
    main = _reprocess if args.reprocess_rejected else _rebuild_tickets if args.ticket else _rebuild
    return runner.run(
        "replay",
        settings,
        lambda: main(args, settings),
        uses="PostgreSQL",
        hint="the live tables are unchanged",
    )


async def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    projections = tuple(BY_NAME[name] for name in args.projection) if args.projection else ALL
    options = RebuildOptions(
        projections=tuple(dict.fromkeys(projections)),
        dry_run=args.dry_run,
        fetch_size=args.batch_size or 2000,
        lock_timeout=args.lock_timeout,
        tz=settings.source_timezone,
    )
    started, cpu = time.monotonic(), time.process_time()
    report = await Rebuild(settings.database_url, options).run()
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    print(rebuild_summary(report, seconds, args.dry_run, cpu_seconds=cpu))
    return 0


async def _rebuild_tickets(args: argparse.Namespace, settings: Settings) -> int:
    projections = tuple(BY_NAME[name] for name in args.projection) if args.projection else ALL
    started = time.monotonic()
    report = await replay_tickets(
        settings.database_url,
        tuple(dict.fromkeys(projections)),
        args.ticket,
        tz=settings.source_timezone,
        dry_run=args.dry_run,
        lock_timeout=args.lock_timeout,
    )
    print(tickets_summary(report, time.monotonic() - started, args.dry_run))
    return 0


async def _reprocess(args: argparse.Namespace, settings: Settings) -> int:
    reprocessing = Reprocessing(
        settings.database_url,
        settings.source_timezone,
        settings.company_id,
        chunk=args.batch_size or 500,
        dry_run=args.dry_run,
    )
    print(reprocess_summary(await reprocessing.run(), args.dry_run))
    return 0


def _table_summary(comparison: TableComparison | TicketComparison) -> str:
    kinds = ", ".join(f"{n} {kind}" for kind, n in comparison.counts.items() if n)
    keys = ", ".join(key for key, _ in comparison.keys[:SHOWN_KEYS])
    more = ", ..." if comparison.differing > SHOWN_KEYS else ""
    return f"{comparison.table}: {kinds} (keys {keys}{more})"


def rebuild_summary(
    report: RebuildReport, seconds: float, dry_run: bool, cpu_seconds: float | None = None
) -> str:
    rate = report.events / seconds if seconds > 0 else 0.0
    differing = [c for c in report.comparisons if c.differing]
    found = f"{report.differences} differences"
    if differing:
        found += " - " + "; ".join(_table_summary(c) for c in differing)
    outcome = (
        "dry run, nothing swapped"
        if dry_run
        else f"swapped in: {', '.join(report.tables)}"
        if report.swapped
        else "nothing swapped"
    )
    log.info(
        "replay_finished",
        events=report.events,
        seconds=round(seconds, 2),
        events_per_second=round(rate),
        differences=report.differences,
        swapped=report.swapped,
        # This process's CPU over those seconds (PostgreSQL's is not in it).
        cpu_seconds=None if cpu_seconds is None else round(cpu_seconds, 2),
    )
    return (
        f"replay: {report.events} events in {seconds:.2f} s ({rate:,.0f} events/s); "
        f"{found}; {outcome}"
    )


def tickets_summary(report: TicketReplayReport, seconds: float, dry_run: bool) -> str:
    differing = [c for c in report.comparisons if c.differing]
    found = f"{report.differences} differences"
    if differing:
        found += " - " + "; ".join(_table_summary(c) for c in differing)
    tables = ", ".join(c.table for c in report.comparisons)
    outcome = "dry run, nothing written" if dry_run else f"rows rewritten in: {tables}"
    log.info(
        "replay_finished",
        tickets=list(report.tickets),
        events=report.events,
        seconds=round(seconds, 2),
        differences=report.differences,
        written=report.written,
    )
    tickets = ("tickets " if len(report.tickets) > 1 else "ticket ") + ", ".join(
        map(str, report.tickets)
    )
    return f"replay: {report.events} events of {tickets} in {seconds:.2f} s; {found}; {outcome}"


def reprocess_summary(report: ReprocessReport, dry_run: bool) -> str:
    o = report.outcomes
    log.info("reprocess_finished", reprocessed=report.reprocessed, dry_run=dry_run, **dict(o))
    if dry_run:
        return (
            f"reprocess (dry run): {report.reprocessed} rejected deliveries; "
            f"{o['decodes']} now decode, {o['ignored']} would be ignored, "
            f"{o['rejected']} still rejected; nothing recorded"
        )
    return (
        f"reprocess: {report.reprocessed} rejected deliveries reprocessed; "
        f"{o['recorded']} now recorded, {o['duplicate']} duplicates, {o['ignored']} ignored, "
        f"{o['rejected']} still rejected"
    )
