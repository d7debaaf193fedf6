"""What a committed batch tells the people who run DeskLedger: log lines and metrics.

The projections compute; this module decides what a human should know about: rejected
deliveries with their reasons, suspected gaps (a lost webhook?) with both event ids, and one
summary line per batch that lists its delivery ids, so one delivery can be traced to its commit.
"""

from __future__ import annotations

import structlog

from services.worker import metrics
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


def _suspected_gaps(result: BatchResult) -> None:
    """Log every gap this batch brought to light: a change whose old status is not the status
    the previous change left, so a webhook between them may never have arrived."""
    states = result.written.get(tickets.PROJECTION.name)
    if not states:
        return
    appended = {f"{s.event.type}:{s.event.source_id}" for s in result.appended}
    for state in states.values():
        for previous_event, event in tickets.suspected_gaps(state, appended):
            log.warning(
                "suspected_gap",
                ticket_id=state.ticket_id,
                previous_event=previous_event,
                gap_event=event,
                hint="a change's old status is not the status the previous change left",
            )
