"""Decoding rejected deliveries again, after a decoder fix, and recording what they now yield.

Rejected deliveries are read in chunks in `(received_at, delivery_id)` order, keyset-paginated so
that the ones still rejected (they keep the outcome, with their new error) are not read twice,
and limited to those rejected before the run started, so that it ends while workers go on. Each
chunk is decoded with the worker's `decode` and written with `rerecord`: one transaction under
the append lock that appends the new events (a duplicate of a stored event stays one event,
I3), folds them into the live projections and updates the outcomes.
"""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from services.replay.locks import connect, replay_lock
from shared.db import refused_by_store
from shared.envelope import Delivery
from shared.recording import Decoded, decode, record_alone, rerecord

log = structlog.get_logger()

STARTED = "SELECT now()"
REJECTED = """
SELECT
    delivery_id,
    received_at,
    kind,
    content_type,
    body,
    body_sha256
FROM deliveries
WHERE outcome = 'rejected'
  AND processed_at <= $1
  AND (received_at, delivery_id) > ($2, $3)
ORDER BY received_at, delivery_id
LIMIT $4
"""
# Before any delivery: keyset pagination starts after this.
_BEFORE_ALL = (datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0))


@dataclass
class ReprocessReport:
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def reprocessed(self) -> int:
        return sum(self.outcomes.values())


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(
        delivery_id=row["delivery_id"],
        received_at=row["received_at"],
        kind=row["kind"],
        content_type=row["content_type"],
        body=row["body"],
        body_sha256=row["body_sha256"],
    )


class Reprocessing:
    def __init__(
        self,
        database_url: str,
        tz: ZoneInfo,
        company_id: int | None,
        chunk: int = 500,
        dry_run: bool = False,
    ) -> None:
        self.database_url = database_url
        self.tz = tz
        self.company_id = company_id
        self.chunk = chunk
        self.dry_run = dry_run
        self.report = ReprocessReport()

    async def run(self) -> ReprocessReport:
        async with replay_lock(self.database_url):
            conn = await connect(self.database_url)
            try:
                await self._run(conn)
            finally:
                await conn.close()
        return self.report

    async def _run(self, conn: asyncpg.Connection) -> None:
        started = await conn.fetchval(STARTED)
        after_at, after_id = _BEFORE_ALL
        while rows := await conn.fetch(REJECTED, started, after_at, after_id, self.chunk):
            after_at, after_id = rows[-1]["received_at"], rows[-1]["delivery_id"]
            batch = [decode(_delivery(row), self.tz, self.company_id) for row in rows]
            counts = self._would(batch) if self.dry_run else await self._rerecord(conn, batch)
            self.report.outcomes.update(counts)
            log.info("rejected_reprocessed", dry_run=self.dry_run, **dict(counts))

    @staticmethod
    async def _rerecord(conn: asyncpg.Connection, batch: list[Decoded]) -> Counter[str]:
        """The chunk in one transaction; one by one when the store refuses a value in it, so
        that the delivery it belongs to stays rejected (with the database's reason) alone."""
        try:
            return (await rerecord(conn, batch)).counts()
        except Exception as exc:
            if not refused_by_store(exc):
                raise
        counts: Counter[str] = Counter()
        for item in batch:
            result = await record_alone(functools.partial(rerecord, conn), item)
            counts.update(result.counts())
        return counts

    @staticmethod
    def _would(batch: list[Decoded]) -> Counter[str]:
        """A dry run's outcomes: whether each now decodes (duplicates are not told apart)."""
        return Counter(
            "rejected" if item.error else "ignored" if item.event is None else "decodes"
            for item in batch
        )
