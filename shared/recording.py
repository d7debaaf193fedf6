"""Turning accepted deliveries into stored events and projection rows, one transaction per batch.

Used by the worker (deliveries from the queue) and by the replay's `--reprocess-rejected`
(deliveries from the table). The order inside the transaction is what makes it idempotent:

1. take the append lock (serialises appends, see `eventstore`);
2. skip deliveries already in `deliveries`: a redelivery after a crash between COMMIT and ack;
3. append the decoded events, `ON CONFLICT DO NOTHING` on `(type, source_id)` (I3);
4. fold the newly appended events, and only those, into every projection;
5. write each delivery's row with its outcome. COMMIT; the caller acks after it (I4).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo

import structlog

from shared import eventstore
from shared.db import Conn, refused_by_store
from shared.envelope import Delivery
from shared.errors import DecodeError
from shared.events import Event
from shared.eventstore import NewEvent, Source, StoredEvent
from shared.projections import ALL as PROJECTIONS
from shared.projections.base import apply
from shared.usedesk import decode_webhook

log = structlog.get_logger()

Outcome = Literal["recorded", "duplicate", "ignored", "rejected"]


@dataclass(frozen=True, slots=True)
class Decoded:
    delivery: Delivery
    event: Event | None
    error: str | None
    # `api`: a fact `deskledger reconcile` found, with a delivery row of its own (its module doc).
    source: Source = "webhook"
    # What the decoder coerced rather than refused (`deliveries.warnings`).
    warnings: tuple[str, ...] = ()

    def rejected(self, error: str) -> Decoded:
        """This delivery kept as `rejected` with `error`, its event (if any) set aside."""
        return Decoded(self.delivery, None, error, self.source, self.warnings)


@dataclass
class BatchResult:
    outcomes: dict[UUID, Outcome] = field(default_factory=dict)
    already_processed: int = 0
    appended: list[StoredEvent] = field(default_factory=list)
    # Per projection, the states of the rows the batch wrote (for the worker's report).
    written: dict[str, dict[Any, Any]] = field(default_factory=dict)

    def counts(self) -> Counter[str]:
        return Counter(self.outcomes.values())


def decode(delivery: Delivery, tz: ZoneInfo, company_id: int | None) -> Decoded:
    """Decode outside the transaction (CPU work); never raises.

    A `DecodeError` becomes this delivery's `rejected` outcome, and so does any other exception
    of the decoder (a bug for a value nobody foresaw): charged to this message alone, it can be
    reprocessed after the fix, and never takes the rest of its batch down with it (issue 19).
    """
    warnings: list[str] = []
    try:
        _, event = decode_webhook(
            delivery.body,
            delivery.content_type,
            received_at=delivery.received_at,
            tz=tz,
            company_id=company_id,
            warnings=warnings,
        )
    except DecodeError as exc:
        return Decoded(delivery, None, str(exc))
    except Exception as exc:
        log.exception("decoder_failed", delivery_id=str(delivery.delivery_id), kind=delivery.kind)
        return Decoded(delivery, None, f"{delivery.kind}: the decoder failed: {exc!r}")
    return Decoded(delivery, event, None, warnings=tuple(warnings))


EXISTING = "SELECT delivery_id FROM deliveries WHERE delivery_id = ANY($1::uuid[])"

DELIVERY_COLUMNS = (
    "delivery_id",
    "received_at",
    "kind",
    "content_type",
    "body",
    "body_sha256",
    "outcome",
    "error",
    "source",
    "warnings",
)

# A delivery's warnings travel as one text, lines apart (unnest cannot carry an array each).
UPDATE_OUTCOMES = """
UPDATE deliveries AS d
SET
    outcome = u.outcome,
    error = u.error,
    warnings = string_to_array(nullif(u.warnings, ''), E'\\n'),
    processed_at = now()
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
    AS u (delivery_id, outcome, error, warnings)
WHERE d.delivery_id = u.delivery_id
"""


def _new_events(batch: Sequence[Decoded]) -> list[NewEvent]:
    """One candidate per `(type, source_id)`: the first delivery in the batch that carries it."""
    seen: set[tuple[str, str]] = set()
    new: list[NewEvent] = []
    for item in batch:
        if item.event is None:
            continue
        key = (item.event.type, item.event.source_id)
        if key not in seen:
            seen.add(key)
            new.append(NewEvent(item.event, item.delivery.delivery_id, item.source))
    return new


def _outcome(item: Decoded, appended_by: dict[tuple[str, str], UUID]) -> Outcome:
    if item.error is not None:
        return "rejected"
    if item.event is None:
        return "ignored"
    key = (item.event.type, item.event.source_id)
    return "recorded" if appended_by.get(key) == item.delivery.delivery_id else "duplicate"


async def _append_and_project(conn: Conn, batch: Sequence[Decoded], result: BatchResult) -> None:
    result.appended = await eventstore.append(conn, _new_events(batch))
    appended_by: dict[tuple[str, str], UUID] = {
        (s.event.type, s.event.source_id): s.delivery_id for s in result.appended
    }
    for item in batch:
        result.outcomes[item.delivery.delivery_id] = _outcome(item, appended_by)
    for projection in PROJECTIONS:
        result.written[projection.name] = await apply(conn, projection, result.appended)


async def record(
    conn: Conn,
    batch: Sequence[Decoded],
    before_commit: Callable[[], None] | None = None,
) -> BatchResult:
    """Store a batch of freshly consumed deliveries in one transaction (see the module doc).

    `before_commit` runs inside the transaction just before COMMIT (the fault tests use it).
    """
    result = BatchResult()
    async with conn.transaction():
        await eventstore.lock_appends(conn)
        ids = [item.delivery.delivery_id for item in batch]
        existing = {row["delivery_id"] for row in await conn.fetch(EXISTING, ids)}
        fresh: dict[UUID, Decoded] = {}
        for item in batch:
            if item.delivery.delivery_id not in existing:
                fresh.setdefault(item.delivery.delivery_id, item)
        result.already_processed = len(batch) - len(fresh)
        await _append_and_project(conn, list(fresh.values()), result)
        await _insert_deliveries(conn, list(fresh.values()), result)
        if before_commit is not None:
            before_commit()
    return result


async def _insert_deliveries(conn: Conn, batch: Sequence[Decoded], result: BatchResult) -> None:
    """COPY the delivery rows: no conflict is possible, the append lock is held and every
    delivery already stored was filtered out under it (and COPY is the cheapest way in)."""
    if not batch:
        return
    rows = [
        (
            item.delivery.delivery_id,
            item.delivery.received_at,
            item.delivery.kind,
            item.delivery.content_type,
            item.delivery.body,
            item.delivery.body_sha256,
            result.outcomes[item.delivery.delivery_id],
            item.error,
            item.source,
            list(item.warnings) or None,
        )
        for item in batch
    ]
    await conn.copy_records_to_table("deliveries", records=rows, columns=DELIVERY_COLUMNS)


async def rerecord(conn: Conn, batch: Sequence[Decoded]) -> BatchResult:
    """Decode-again path for deliveries already in the table (`replay --reprocess-rejected`)."""
    result = BatchResult()
    async with conn.transaction():
        await eventstore.lock_appends(conn)
        await _append_and_project(conn, batch, result)
        ids = [item.delivery.delivery_id for item in batch]
        await conn.execute(
            UPDATE_OUTCOMES,
            ids,
            [result.outcomes[i] for i in ids],
            [i.error for i in batch],
            ["\n".join(i.warnings) for i in batch],
        )
    return result


async def record_alone(
    write: Callable[[Sequence[Decoded]], Awaitable[BatchResult]], item: Decoded
) -> BatchResult:
    """`write([item])`; when the store refuses a value of it, `item` is written as `rejected`
    with the database's reason instead, so that it can be reprocessed after a fix.

    The safety net behind the decoder's own checks (issue 19): whatever value a decoder lets
    through that PostgreSQL cannot take costs this one delivery, never a dead letter.
    """
    try:
        return await write([item])
    except Exception as exc:
        if not refused_by_store(exc):
            raise
        reason = f"{item.delivery.kind}: the database refused a value: {exc}"
    log.warning(
        "delivery_refused_by_store",
        delivery_id=str(item.delivery.delivery_id),
        error=reason,
        hint="kept as rejected; replay --reprocess-rejected retries it after a fix",
    )
    return await write([item.rejected(reason)])
