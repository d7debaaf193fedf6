"""The webhook completeness figure: of the facts UseDesk's API showed `deskledger reconcile`,
how many the webhooks had delivered.

Counted over `reconcile_facts` (every fact the API showed, once, with whether it was missing),
by the fact's own time, over the last `days` days. Facts no webhook ever carries (comments
written by rules) and facts from before DeskLedger's first webhook (a backfill) are left out:
they say nothing about the webhooks. Shared by `deskledger status` and reconcile's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from shared.db import Conn

WINDOW_DAYS = 7

BY_TYPE = """
SELECT
    type,
    count(*) AS facts,
    count(*) FILTER (WHERE missing) AS missing
FROM reconcile_facts
WHERE webhook_expected
  AND occurred_at >= now() - make_interval(days => $1)
GROUP BY type
ORDER BY type
"""
LAST_COMPLETE_RUN = """
SELECT max(finished_at)
FROM reconcile_passes
WHERE outcome = 'complete'
"""


@dataclass(frozen=True)
class Completeness:
    days: int
    # type -> (facts the API showed, of which the webhooks had not delivered)
    by_type: dict[str, tuple[int, int]] = field(default_factory=dict)
    last_complete_pass: datetime | None = None

    @property
    def facts(self) -> int:
        return sum(facts for facts, _ in self.by_type.values())

    @property
    def missing(self) -> int:
        return sum(missing for _, missing in self.by_type.values())

    @property
    def ratio(self) -> float | None:
        """Delivered by webhooks / shown by the API; None before any fact was checked."""
        return None if not self.facts else 1 - self.missing / self.facts

    def line(self) -> str:
        if self.ratio is None:
            if self.last_complete_pass is None:
                return "unknown: no reconcile pass yet (see docs/operations.md)"
            return (
                f"unknown: no fact checked over the last {self.days} days was due by webhook "
                "(a backfill of what came before DeskLedger's first webhook, or a quiet week)"
            )
        missing = ", ".join(f"{t} {m}" for t, (_, m) in self.by_type.items() if m) or "none"
        return (
            f"{100 * self.ratio:.1f} % over the last {self.days} days "
            f"({self.missing} of {self.facts} facts recovered from the API: {missing})"
        )


async def completeness(conn: Conn, days: int = WINDOW_DAYS) -> Completeness:
    rows = await conn.fetch(BY_TYPE, days)
    last: datetime | None = await conn.fetchval(LAST_COMPLETE_RUN)
    by_type = {row["type"]: (row["facts"], row["missing"]) for row in rows}
    return Completeness(days, by_type, last)
