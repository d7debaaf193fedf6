"""`deskledger replay`: rebuild projections from the event store; reprocess rejected deliveries."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import asyncpg
import structlog

from services.replay.comparison import TableComparison
from services.replay.locks import ReplayBusy
from services.replay.rebuild import Rebuild, RebuildOptions, RebuildReport
from services.replay.reprocessing import Reprocessing, ReprocessReport
from shared.errors import DeskLedgerError
from shared.logging import configure_logging
from shared.projections import ALL, BY_NAME
from shared.settings import Settings, settings_help

log = structlog.get_logger()

EXIT_FAILED = 1
EXIT_BUSY = 3
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
        "--batch-size",
        type=int,
        metavar="N",
        help="events per cursor fetch when rebuilding (default 2000); deliveries per "
        "transaction when reprocessing (default 500)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="longest wait for the append lock or a live table's lock (default 2); workers and "
        "readers wait at most this long for the replay, which retries after a catch-up",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    configure_logging("replay", settings.log_level, settings.log_format)
    if args.batch_size is not None and args.batch_size < 1:
        print("deskledger replay: --batch-size must be 1 or more", file=sys.stderr)
        return 2
    if args.lock_timeout <= 0:
        print("deskledger replay: --lock-timeout must be more than 0 seconds", file=sys.stderr)
        return 2
    if args.reprocess_rejected and args.projection:
        print(
            "deskledger replay: --projection does not apply to --reprocess-rejected",
            file=sys.stderr,
        )
        return 2
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        uvloop.install()
    except ImportError:
        pass
    return _guarded(args, settings)


def _guarded(args: argparse.Namespace, settings: Settings) -> int:
    """Run, turning every expected failure into one clear line and an exit status."""
    try:
        if args.reprocess_rejected:
            return asyncio.run(_reprocess(args, settings))
        return asyncio.run(_rebuild(args, settings))
    except ReplayBusy as exc:
        return _failed(str(exc), EXIT_BUSY)
    except DeskLedgerError as exc:
        return _failed(str(exc), EXIT_FAILED)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return _failed(
            f"PostgreSQL at {settings.safe_database_url} failed: {exc!r}; "
            "the live tables are unchanged",
            EXIT_FAILED,
        )


def _failed(message: str, status: int) -> int:
    log.error("replay_failed", error=message)
    print(f"deskledger replay: {message}", file=sys.stderr)
    return status


async def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    projections = tuple(BY_NAME[name] for name in args.projection) if args.projection else ALL
    options = RebuildOptions(
        projections=tuple(dict.fromkeys(projections)),
        dry_run=args.dry_run,
        fetch_size=args.batch_size or 2000,
        lock_timeout=args.lock_timeout,
    )
    started = time.monotonic()
    report = await Rebuild(settings.database_url, options).run()
    print(rebuild_summary(report, time.monotonic() - started, args.dry_run))
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


def _table_summary(comparison: TableComparison) -> str:
    kinds = ", ".join(f"{n} {kind}" for kind, n in comparison.counts.items() if n)
    keys = ", ".join(key for key, _ in comparison.keys[:SHOWN_KEYS])
    more = ", ..." if comparison.differing > SHOWN_KEYS else ""
    return f"{comparison.table}: {kinds} (keys {keys}{more})"


def rebuild_summary(report: RebuildReport, seconds: float, dry_run: bool) -> str:
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
    )
    return (
        f"replay: {report.events} events in {seconds:.2f} s ({rate:,.0f} events/s); "
        f"{found}; {outcome}"
    )


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
