"""`deskledger reconcile`: find and heal what webhooks missed, from UseDesk's REST API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from services import runner
from services.reconcile import report
from services.reconcile.passes import Options, PassReport, Reconciler
from services.reconcile.transport import AiohttpTransport
from services.runner import positive_int
from shared.completeness import Completeness, completeness
from shared.settings import Settings, settings_help
from shared.usedesk.api import UseDeskApi

log = structlog.get_logger()

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(raw: str) -> float:
    """argparse type: `90`, `90s`, `15m`, `1h`, `1d` as seconds (at least 1)."""
    match = _DURATION.fullmatch(raw.strip().lower())
    seconds = float(match[1]) * _UNITS[match[2]] if match else 0.0
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"expected a duration like 15m, 1h or 90s, got {raw!r}")
    return seconds


def date(raw: str) -> datetime:
    """argparse type: `2024-03-01`, `2024-03-01 12:00` or ISO 8601; UTC unless it says."""
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date like 2024-03-01 or 2024-03-01T12:00, got {raw!r}"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "reconcile",
        help="find and heal what webhooks missed, from UseDesk's REST API",
        description=(
            "Compare the store with UseDesk's REST API (USEDESK_API_URL, USEDESK_API_TOKEN) and "
            "append, with source `api`, every ticket creation, change and comment the webhooks "
            "did not deliver, under the webhooks' own keys (a webhook arriving later is a "
            "duplicate). Where a ticket's state in UseDesk still differs from its projection, "
            "one snapshot correction is appended. Without --since, resumes from the watermark "
            "of the last complete pass. Requests are paced to DESKLEDGER_RECONCILE_RATE per "
            "second. Exit 0 after a complete pass; 1 when the API refused the token, failed or "
            "the pass is incomplete; 2 for a bad setting or no starting point; 3 when another "
            "reconcile is running."
        ),
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--since",
        type=date,
        metavar="DATE",
        help="list tickets updated since DATE (UTC unless it says): backfills history from "
        "before DeskLedger existed",
    )
    parser.add_argument(
        "--ticket",
        dest="tickets",
        type=positive_int,
        nargs="+",
        action="extend",
        default=[],
        metavar="ID",
        help="reconcile these tickets only (no listing; the watermark does not move)",
    )
    parser.add_argument(
        "--every",
        type=duration,
        metavar="DURATION",
        help="run a pass every DURATION (15m, 1h, ...) until SIGTERM, instead of once",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would be appended; append nothing"
    )
    parser.add_argument(
        "--channel",
        dest="channels",
        type=positive_int,
        action="append",
        default=[],
        metavar="ID",
        help="only tickets of this UseDesk channel (repeatable): the API channel's watched "
        "channels, so that a ticket no webhook was due for is not counted as missed",
    )
    parser.add_argument(
        "--status",
        dest="statuses",
        type=positive_int,
        action="append",
        default=[],
        metavar="ID",
        help="only tickets in this status (repeatable; default: whatever the API lists)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve /metrics and /healthz on PORT while running (default 0: off)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.usedesk_api_token:
        return runner.refused(
            "reconcile", "USEDESK_API_TOKEN is empty: set it to the UseDesk API channel's token"
        )
    if args.tickets and (args.since or args.every):
        return runner.refused("reconcile", "--ticket cannot be combined with --since or --every")
    options = Options(
        since=args.since,
        tickets=tuple(args.tickets),
        dry_run=args.dry_run,
        channels=tuple(args.channels),
        statuses=tuple(args.statuses),
    )
    return runner.run(
        "reconcile",
        settings,
        lambda: _main(settings, options, args.every, args.metrics_port),
        uses="PostgreSQL",
    )


async def _main(
    settings: Settings, options: Options, every: float | None, metrics_port: int
) -> int:
    stop = asyncio.Event()
    http = await report.serve_metrics(metrics_port)
    try:
        async with AiohttpTransport() as transport:
            api = UseDeskApi(
                settings.usedesk_api_url,
                settings.usedesk_api_token,
                transport,
                rate=settings.reconcile_rate,
            )
            conn = await asyncpg.connect(settings.database_url)
            try:
                reconciler = Reconciler(settings, api, conn)
                _on_sigterm(stop, reconciler)
                return await _passes(reconciler, conn, options, every, stop)
            finally:
                await conn.close()
    finally:
        if http is not None:
            await http.cleanup()


def _on_sigterm(stop: asyncio.Event, reconciler: Reconciler) -> None:
    def stopping() -> None:
        stop.set()
        reconciler.stopping = True

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping)


async def _passes(
    reconciler: Reconciler,
    conn: asyncpg.Connection,
    options: Options,
    every: float | None,
    stop: asyncio.Event,
) -> int:
    while True:
        result = await reconciler.run(options)
        figures = None if options.dry_run else await completeness(conn)
        _tell(result, figures)
        if every is None or stop.is_set():
            return 0 if report.outcome(result) == "complete" else 1
        # The next pass resumes from the watermark, whatever the first one started from.
        options = Options(
            dry_run=options.dry_run, channels=options.channels, statuses=options.statuses
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return 0


def _tell(result: PassReport, figures: Completeness | None) -> None:
    report.observe(result, figures)
    report.log_pass(result)
    print(report.summary(result, figures), flush=True)
