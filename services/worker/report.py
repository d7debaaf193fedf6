"""What a committed batch tells the people who run DeskLedger: log lines and metrics.

The projections compute; this module decides what a human should know about: rejected
deliveries with their reasons, suspected gaps (a lost webhook?) with both event ids, and one
summary line per batch that lists its delivery ids, so one delivery can be traced to its commit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import structlog

from services.worker import metrics
from shared.clock import ClockWatch
from shared.projections import tickets
from shared.recording import BatchResult, Decoded

log = structlog.get_logger()


def report(result: BatchResult, batch: list[Decoded], seconds: float) -> None:
    counts = result.counts()
    for item in batch:
        if item.error is not None and item.delivery.delivery_id in result.outcomes:
            log.warning(
                "delivery_rejected",
                delivery_id=str(item.delivery.delivery_id),
                kind=item.delivery.kind,
                error=item.error,
            )
    _suspected_gaps(result)
    for outcome, count in counts.items():
        metrics.DELIVERIES.labels(outcome).inc(count)
    metrics.BATCHES.inc()
    metrics.EVENTS.inc(len(result.appended))
    metrics.BATCH_SECONDS.observe(seconds)
    committed = datetime.now(UTC)
    for item in batch:
        metrics.LAG_SECONDS.observe(
            max(0.0, (committed - item.delivery.received_at).total_seconds())
        )
    log.info(
        "batch_committed",
        size=len(batch),
        recorded=counts["recorded"],
        duplicates=counts["duplicate"],
        ignored=counts["ignored"],
        rejected=counts["rejected"],
        already_processed=result.already_processed,
        duration_ms=round(seconds * 1000, 1),
        delivery_ids=[str(item.delivery.delivery_id) for item in batch],
    )


class ClockReport:
    """Watches UseDesk's clock against ours (`shared.clock`): exports the observed offset and
    warns, naming a zone that fits, when it leaves DESKLEDGER_SOURCE_TIMEZONE's by more than
    15 minutes (and says so again when it comes back)."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._watch = ClockWatch()
        self._wrong = False

    def observe(self, batch: list[Decoded]) -> None:
        self._watch.observe([item.event for item in batch if item.event is not None])
        verdict = self._watch.verdict(self.tz)
        if verdict is None:
            return
        metrics.SOURCE_CLOCK_OFFSET.set(verdict.offset)
        if verdict.wrong and not self._wrong:
            log.warning(
                "source_timezone_mismatch",
                observed_offset_s=round(verdict.offset),
                configured=str(self.tz),
                configured_offset_s=round(verdict.configured),
                fits=verdict.fits,
                samples=verdict.samples,
                hint=f"set DESKLEDGER_SOURCE_TIMEZONE={verdict.fits}, then `deskledger replay`",
            )
        elif self._wrong and not verdict.wrong:
            log.info("source_timezone_agrees", configured=str(self.tz))
        self._wrong = verdict.wrong


def _suspected_gaps(result: BatchResult) -> None:
    """Log every gap this batch brought to light: a change whose old status (or old assignee,
    group, subject) is not what the events before it left, so a webhook between them may never
    have arrived."""
    states = result.written.get(tickets.PROJECTION.name)
    if not states:
        return
    appended = {f"{s.event.type}:{s.event.source_id}" for s in result.appended}
    for state in states.values():
        for field, previous_event, event in tickets.suspected_gaps(state, appended):
            metrics.SUSPECTED_GAPS.labels(field).inc()
            log.warning(
                "suspected_gap",
                ticket_id=state.ticket_id,
                field=field,
                previous_event=previous_event,
                gap_event=event,
                hint=f"a change's old {field} is not the value the events before it left",
            )
