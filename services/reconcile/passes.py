"""One reconcile pass: list what changed, fetch what is suspicious, append what is missing.

1. The window: `--since`, else the watermark (the start of the last complete pass), else the
   oldest stored event, each widened by `MARGIN` (UseDesk's dates are UTC by its docs, webhooks
   may be read in another zone, clocks drift: the overlap costs nothing, keys dedupe it).
   `--ticket` skips the listing and fetches the named tickets only.
2. The listing (`listing.py`), then the tickets worth a `POST /ticket`: unknown locally, never
   read through the API, `last_updated_at` moved since the last read (UseDesk's text compared
   with UseDesk's text, never with a webhook's time), or disagreeing with the projection on
   status or assignee; tickets with suspected gaps first. Tickets gone (code 113) are skipped.
3. Per ticket, one transaction: the facts the store lacks are recorded through
   `shared.recording.record` (the worker's own path: append lock, `ON CONFLICT DO NOTHING`,
   projections, delivery rows) with `source = 'api'`; every fact shown is noted in
   `reconcile_facts`; then, if the projection still disagrees with the API's current state, one
   `TicketSnapshot` is recorded. `--dry-run` runs exactly this and rolls it back.
4. A pass whose listing and fetches all completed advances the watermark to its start.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog

from services.reconcile import store
from services.reconcile.facts import Fact, differences, history_facts, snapshot_fact
from services.reconcile.listing import Listing, OffsetSemantics, list_window, window_filters
from services.reconcile.progress import Progress
from shared import eventstore
from shared.errors import DeskLedgerError
from shared.recording import record
from shared.settings import Settings
from shared.usedesk.api import ApiRefused, Gone, UseDeskApi
from shared.usedesk.history import Snapshot, as_int, ticket_history

log = structlog.get_logger()

# Wider than any plausible zone error (UTC vs Moscow is 3 h) plus clock drift (api.md §5.4).
MARGIN = timedelta(hours=6)


class NothingToResume(DeskLedgerError):
    """No watermark and no event yet: give --since DATE for the first pass (a backfill)."""

    exit_code = 2


class ReconcileBusy(DeskLedgerError):
    """Another reconcile holds the lock on this database."""

    exit_code = 3


@dataclass(frozen=True)
class Options:
    since: datetime | None = None
    tickets: tuple[int, ...] = ()
    dry_run: bool = False
    channels: tuple[int, ...] = ()
    statuses: tuple[int, ...] = ()


@dataclass
class PassReport:
    pass_id: uuid.UUID
    started: datetime
    mode: str
    dry_run: bool
    window_start: datetime | None = None
    offset_semantics: OffsetSemantics | None = None
    tickets_listed: int = 0
    tickets_fetched: int = 0
    tickets_gone: int = 0
    missing: Counter[str] = field(default_factory=Counter)
    not_expected: Counter[str] = field(default_factory=Counter)
    unreadable: int = 0
    corrections: int = 0
    api_calls: int = 0
    api_retries: int = 0
    seconds: float = 0.0
    complete: bool = False
    watermark: datetime | None = None
    error: str | None = None
    note: str | None = None

    def figures(self) -> dict[str, object]:
        return {
            "offset_semantics": self.offset_semantics,
            "tickets_listed": self.tickets_listed,
            "tickets_fetched": self.tickets_fetched,
            "tickets_gone": self.tickets_gone,
            "missing": dict(sorted(self.missing.items())),
            "corrections": self.corrections,
            "api_calls": self.api_calls,
            "error": self.error,
        }


class Reconciler:
    def __init__(self, settings: Settings, api: UseDeskApi, conn: asyncpg.Connection) -> None:
        self.settings = settings
        self.api = api
        self.conn = conn
        # Set by SIGTERM: the pass stops after the ticket in hand, incomplete.
        self.stopping = False

    async def run(self, options: Options) -> PassReport:
        """One pass under the reconcile lock (see the module doc)."""
        if not await store.try_lock(self.conn):
            raise ReconcileBusy("another `deskledger reconcile` is running against this database")
        try:
            return await self._run(options)
        finally:
            await store.unlock(self.conn)

    async def _run(self, options: Options) -> PassReport:
        started = datetime.now(UTC)
        mode = "tickets" if options.tickets else "since" if options.since else "resume"
        report = PassReport(uuid.uuid4(), started, mode, options.dry_run)
        clock = time.monotonic()
        calls_before, retries_before = self.api.calls, self.api.retries
        if not options.tickets:
            report.window_start = await self._window_start(options)
        if not options.dry_run:
            await store.start_pass(self.conn, report.pass_id, started, report.window_start, mode)
        try:
            await self._pass(options, report)
        except DeskLedgerError as exc:
            report.error = str(exc)
            if isinstance(exc, ApiRefused):
                raise  # the pass is recorded as failed, and the run stops
        finally:
            report.api_calls = self.api.calls - calls_before
            report.api_retries = self.api.retries - retries_before
            report.seconds = time.monotonic() - clock
            if not options.dry_run:
                await self._finish(report)
        return report

    async def _window_start(self, options: Options) -> datetime:
        if options.since is not None:
            return options.since
        start = await store.watermark(self.conn) or await store.oldest_event(self.conn)
        if start is None:
            raise NothingToResume(
                "no watermark and no event yet: give --since DATE for the first pass "
                "(it backfills the history from that date)"
            )
        return start - MARGIN

    async def _pass(self, options: Options, report: PassReport) -> None:
        if options.tickets:
            chosen = list(dict.fromkeys(options.tickets))
            complete = True
        else:
            assert report.window_start is not None
            filters = window_filters(
                report.window_start,
                report.started,
                list(options.channels),
                list(options.statuses),
            )
            listing = await list_window(self.api, filters)
            report.offset_semantics = listing.semantics
            report.tickets_listed = len(listing.tickets)
            report.note = listing.note
            chosen = await self._choose(listing)
            complete = listing.complete
        first_webhook = await store.first_webhook(self.conn)
        progress = Progress(len(chosen))
        for ticket_id in chosen:
            if self.stopping:
                report.note, complete = "stopped before the end (SIGTERM)", False
                break
            await self._ticket(ticket_id, report, first_webhook)
            progress.advance(report)
        progress.close()
        report.complete = complete

    async def _choose(self, listing: Listing) -> list[int]:
        """Tickets worth a fetch, suspected gaps first (see the module doc)."""
        local = await store.local_tickets(self.conn, list(listing.tickets))
        gaps: list[int] = []
        others: list[int] = []
        for ticket_id, item in listing.tickets.items():
            known = local[ticket_id]
            if known.gone:
                continue
            moved = not known.read_before or known.api_last_updated_at != item.get(
                "last_updated_at"
            )
            disagrees = known.projected and (
                as_int(item.get("status", item.get("status_id"))) != known.status_id
                or as_int(item.get("assignee_id")) != known.assignee_id
            )
            if not known.projected or moved or disagrees:
                (gaps if known.suspected_gaps else others).append(ticket_id)
        unread = [t for t in await store.unread_gaps(self.conn) if t not in listing.tickets]
        return unread + gaps + others

    async def _ticket(
        self, ticket_id: int, report: PassReport, first_webhook: datetime | None
    ) -> None:
        answer = await self.api.ticket(ticket_id)
        report.tickets_fetched += 1
        if isinstance(answer, Gone):
            report.tickets_gone += 1
            log.info("reconcile_ticket_gone", ticket_id=ticket_id, reason=answer.reason)
            if not report.dry_run:
                await store.remember_ticket(self.conn, ticket_id, None, answer.reason)
            return
        history = ticket_history(answer)
        now = datetime.now(UTC)
        facts, unreadable = history_facts(
            history, now, self.settings.source_timezone, self.settings.company_id
        )
        for bad in unreadable:
            log.warning(
                "reconcile_fact_unreadable", ticket_id=ticket_id, kind=bad.kind, error=bad.error
            )
        report.unreadable += len(unreadable)
        transaction = self.conn.transaction()
        await transaction.start()
        try:
            recovered = await self._append_missing(facts, now)
            await store.checked(
                self.conn, _checked(facts, recovered, first_webhook), report.pass_id
            )
            corrected = await self._correct(history.snapshot, now)
            await store.remember_ticket(self.conn, ticket_id, history.snapshot.last_updated_at)
        except BaseException:
            await transaction.rollback()
            raise
        if report.dry_run:
            await transaction.rollback()
        else:
            await transaction.commit()
        for fact in facts:
            if fact.key in recovered:
                (report.missing if fact.webhook_expected else report.not_expected)[fact.kind] += 1
        report.corrections += corrected
        if recovered or corrected:
            log.info(
                "reconcile_ticket_healed",
                ticket_id=ticket_id,
                facts=len(recovered),
                corrected=bool(corrected),
                dry_run=report.dry_run,
            )

    async def _append_missing(self, facts: list[Fact], now: datetime) -> set[tuple[str, str]]:
        """Record the facts the store lacks; the keys this call appended."""
        if not facts:
            return set()
        stored = {
            (s.event.type, s.event.source_id)
            for s in await eventstore.read_ticket(self.conn, facts[0].event.ticket_id)
        }
        missing = [fact for fact in facts if fact.key not in stored]
        if not missing:
            return set()
        result = await record(self.conn, [fact.decoded(now) for fact in missing])
        return {(s.event.type, s.event.source_id) for s in result.appended}

    async def _correct(self, snapshot: Snapshot, now: datetime) -> int:
        """One `TicketSnapshot` where the projection still disagrees with the API; 1 if appended."""
        differing = differences(snapshot, await store.projected(self.conn, snapshot.ticket_id))
        if not differing:
            return 0
        fact = snapshot_fact(snapshot, now, self.settings.company_id)
        result = await record(self.conn, [fact.decoded(now)])
        if result.appended:
            log.info("reconcile_snapshot_recorded", ticket_id=snapshot.ticket_id, fields=differing)
        return len(result.appended)

    async def _finish(self, report: PassReport) -> None:
        outcome = "failed" if report.error else "complete" if report.complete else "incomplete"
        async with self.conn.transaction():
            await store.finish_pass(self.conn, report.pass_id, outcome, report.figures())
            if outcome == "complete" and report.mode != "tickets":
                await store.advance_watermark(self.conn, report.started, report.pass_id)
                report.watermark = await store.watermark(self.conn)


def _checked(
    facts: list[Fact], recovered: set[tuple[str, str]], first_webhook: datetime | None
) -> list[store.CheckedFact]:
    return [
        store.CheckedFact(
            type=fact.event.type,
            source_id=fact.event.source_id,
            ticket_id=fact.event.ticket_id,
            occurred_at=fact.event.occurred_at,
            missing=fact.key in recovered,
            webhook_expected=fact.webhook_expected
            and first_webhook is not None
            and fact.event.occurred_at >= first_webhook,
        )
        for fact in facts
    ]
