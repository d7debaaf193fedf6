"""The checker every fault test shares: nothing acknowledged is lost, nothing is doubled.

After a fault and the recovery (the workers have drained the queue), for the webhooks a `Driver`
sent:

(a) every webhook answered 200 is exactly one event, by `(type, source_id)`, and the delivery id
    of each 200 has a `deliveries` row with outcome `recorded` or `duplicate` (I1-I3);
(b) no event exists that the driver never sent, and every event's delivery is `recorded`;
(c) the live projections equal a replay of the store (I5), twice over: the whole store folded
    again with the projections' own functions into temporary copies of their tables, compared
    row for row; and `deskledger replay --dry-run` (the replay service's rebuild and compare).

`check()` returns a `Summary`; `Summary.assert_ok()` fails the test with the details.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from services.replay.rebuild import Rebuild, RebuildOptions
from shared import eventstore
from shared.projections import ALL as PROJECTIONS
from shared.projections.base import fold_into, rows_of
from tests.helpers.driver import Driver, Sent
from tests.helpers.webhooks import Key

# Where `make chaos` collects every test's figures (unset: nothing is written).
SUMMARY_ENV = "DESKLEDGER_CHAOS_SUMMARY"
GOOD_OUTCOMES = frozenset({"recorded", "duplicate"})


@dataclass
class Summary:
    sent: int = 0  # distinct facts sent (a webhook sent twice on purpose counts once)
    attempts: int = 0  # HTTP requests, retries included
    acknowledged: int = 0  # facts with a 200
    stored: int = 0  # sent webhooks that are an event
    lost: int = 0  # acknowledged, not an event
    duplicated: int = 0  # events beyond the first per (type, source_id)
    unexpected: int = 0  # events the driver never sent
    missing_outcomes: int = 0  # 200s whose delivery has no good outcome row
    orphan_events: int = 0  # events whose delivery is not `recorded`
    projection_differences: int = 0  # live rows that differ from a replay (either side)
    deliveries: int = 0  # rows in `deliveries` (retries of unconfirmed publishes add some)
    statuses: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def failures(self) -> dict[str, int]:
        names = (
            "lost",
            "duplicated",
            "unexpected",
            "missing_outcomes",
            "orphan_events",
            "projection_differences",
        )
        return {name: getattr(self, name) for name in names if getattr(self, name)}

    def assert_ok(self) -> None:
        assert not self.failures, f"checker failed: {self.failures}\n{self.describe()}"

    def describe(self) -> str:
        shown = {k: v for k, v in asdict(self).items() if k != "samples"}
        return json.dumps({**shown, "samples": self.samples}, default=str, indent=1)


async def check(database_url: str, driver: Driver | Iterable[Sent]) -> Summary:
    """Compare what the driver was told with what PostgreSQL holds (run after the drain)."""
    sent = driver.sent if isinstance(driver, Driver) else list(driver)
    conn = await asyncpg.connect(database_url)
    try:
        keys = {s.webhook.key for s in sent}
        summary = Summary(sent=len(keys), attempts=sum(len(s.attempts) for s in sent))
        summary.statuses = _statuses(sent)
        await _check_events(conn, sent, summary)
        await _check_outcomes(conn, sent, summary)
        differences = await replay_differences(conn)
    finally:
        await conn.close()
    # Two independent replays: the fold above, and `deskledger replay --dry-run`'s own.
    replayed = await dry_run_differences(database_url)
    summary.projection_differences = sum(differences.values()) + sum(replayed.values())
    if summary.projection_differences:
        summary.samples["projection_differences"] = [differences, replayed]
    return summary


async def dry_run_differences(database_url: str) -> dict[str, int]:
    """What `deskledger replay --dry-run` reports: rebuilt beside the live tables, compared."""
    report = await Rebuild(database_url, RebuildOptions(PROJECTIONS, dry_run=True)).run()
    assert not report.swapped
    return {c.table: c.differing for c in report.comparisons if c.differing}


def _statuses(sent: list[Sent]) -> dict[str, int]:
    counts = Counter(str(a.status or "no answer") for s in sent for a in s.attempts)
    return dict(sorted(counts.items()))


EVENT_COUNTS = "SELECT type, source_id, count(*) AS n FROM events GROUP BY type, source_id"
ORPHAN_EVENTS = """
SELECT e.type, e.source_id, d.outcome
FROM events AS e
LEFT JOIN deliveries AS d ON d.delivery_id = e.delivery_id
WHERE d.outcome IS DISTINCT FROM 'recorded'
"""
OUTCOMES = "SELECT delivery_id, outcome, error FROM deliveries WHERE delivery_id = ANY($1::uuid[])"


async def _check_events(conn: asyncpg.Connection, sent: list[Sent], summary: Summary) -> None:
    stored: dict[Key, int] = {
        (row["type"], row["source_id"]): row["n"] for row in await conn.fetch(EVENT_COUNTS)
    }
    keys = {s.webhook.key for s in sent}
    acknowledged = {s.webhook.key for s in sent if s.acknowledged is not None}
    summary.acknowledged = len(acknowledged)
    summary.stored = len(keys & stored.keys())
    lost = sorted(acknowledged - stored.keys())
    doubled = sorted(k for k, n in stored.items() if n > 1)
    unexpected = sorted(stored.keys() - keys)
    summary.lost = len(lost)
    summary.duplicated = sum(stored[k] - 1 for k in doubled)
    summary.unexpected = len(unexpected)
    orphans = [tuple(row.values()) for row in await conn.fetch(ORPHAN_EVENTS)]
    summary.orphan_events = len(orphans)
    summary.deliveries = await conn.fetchval("SELECT count(*) FROM deliveries")
    for name, items in (
        ("lost", lost),
        ("duplicated", doubled),
        ("unexpected", unexpected),
        ("orphan_events", orphans),
    ):
        if items:
            summary.samples[name] = list(items[:10])


async def _check_outcomes(conn: asyncpg.Connection, sent: list[Sent], summary: Summary) -> None:
    ids: list[UUID] = []
    for s in sent:
        attempt = s.acknowledged
        if attempt is not None and attempt.delivery_id is not None:
            ids.append(UUID(attempt.delivery_id))
    rows = {row["delivery_id"]: row for row in await conn.fetch(OUTCOMES, ids)}
    bad = []
    for delivery_id in ids:
        row = rows.get(delivery_id)
        if row is None or row["outcome"] not in GOOD_OUTCOMES:
            bad.append((str(delivery_id), row and row["outcome"], row and row["error"]))
    # A 200 without a delivery id in its body counts as a missing outcome too.
    bad += [(s.webhook.key, None, "no delivery_id") for s in sent if _ack_without_id(s)]
    summary.missing_outcomes = len(bad)
    if bad:
        summary.samples["missing_outcomes"] = bad[:10]


def _ack_without_id(sent: Sent) -> bool:
    attempt = sent.acknowledged
    return attempt is not None and attempt.delivery_id is None


async def replay_differences(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows that differ between each live projection table and a replay of the store.

    The replay folds every stored event, in position order, with the projections' own
    functions, and writes the rows with their own upsert into `pg_temp` copies of the tables
    (temporary tables come first in the search path, so the unqualified upserts land there).
    All inside a transaction that is rolled back. Use a connection of its own: statements it
    prepared before would still point at the live tables.
    """
    states: list[dict[Any, Any]] = [{} for _ in PROJECTIONS]
    async for chunk in eventstore.read_all(conn):
        for projection, projected in zip(PROJECTIONS, states, strict=True):
            fold_into(projection, projected, chunk)
    differences: dict[str, int] = {}
    transaction = conn.transaction()
    await transaction.start()
    try:
        for projection, projected in zip(PROJECTIONS, states, strict=True):
            table = projection.table  # a constant of the registry, never input
            await conn.execute(f"CREATE TEMP TABLE {table} (LIKE public.{table} INCLUDING ALL)")
            rows = rows_of(projection, [projected[key] for key in sorted(projected)])
            if rows:
                columns = [list(column) for column in zip(*rows, strict=True)]
                await conn.execute(projection.upsert_sql, *columns)
            count = await conn.fetchval(
                f"SELECT count(*) FROM ((TABLE public.{table} EXCEPT ALL TABLE pg_temp.{table})"
                f" UNION ALL (TABLE pg_temp.{table} EXCEPT ALL TABLE public.{table})) AS d"
            )
            if count:
                differences[table] = count
    finally:
        await transaction.rollback()
    return differences


def record(test: str, summary: Summary | None = None, **figures: int) -> None:
    """Append one test's figures to the chaos summary file, when `make chaos` asked for one."""
    path = os.environ.get(SUMMARY_ENV)
    if not path:
        return
    line: dict[str, Any] = {"test": test, "faults": 0, "bad_inputs": 0, "crashes": 0}
    if summary is not None:
        line |= {
            "sent": summary.sent,
            "attempts": summary.attempts,
            "acknowledged": summary.acknowledged,
            "stored": summary.stored,
            "lost": summary.lost,
            "duplicated": summary.duplicated,
            "failures": sum(summary.failures.values()),
        }
    line |= figures
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


# The `verify` fixture of tests/faults/conftest.py: `await verify(driver, faults=1)`.
Verify = Callable[..., Awaitable[Summary]]
