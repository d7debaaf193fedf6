"""Rebuilding projections beside the live tables, comparing, and swapping them in.

Safe while ingress and workers keep running. The steps, one replay at a time (`locks`):

1. prepare: drop whatever an interrupted replay left, create the rebuild schema with an
   unindexed twin of each live table (`schema`);
2. bulk load: in one REPEATABLE READ snapshot note the high-water mark P and fold every event
   <= P into the twins with COPY (`loader`), then build their indexes and statistics;
3. catch up: fold the events appended since with `base.apply`, pass after pass, until a pass
   finds only a few (`catchup`);
4. compare: pause appends for a moment (hold the append lock at session level), bring the twins
   to the last event, take and export a snapshot, let appends go on. In that snapshot the twins
   and the live tables reflect exactly the same events, so every difference found is real, and
   the comparison (a scan of both sides) runs on every connection while the workers go on:
   comparing inside the swap transaction would stall them for as long as the scan takes;
5. swap: one short transaction takes the append lock, applies the events appended since the
   compare, locks the live tables, drops them and moves the twins in (dropping directly rather
   than moving them to a throwaway schema first: within one transaction it is the same). A
   lock_timeout bounds every wait (a long reader must not stall the workers); on timeout it
   rolls back and the swap is tried again after another catch-up.

Why no event is missed or applied twice across the swap:
- appends are serialised (`shared.eventstore`), so a snapshot holds exactly the events up to its
  max(position), and each read above takes "position > last applied" within one snapshot: the
  ranges read are contiguous and disjoint, and every event reaches the twins exactly once;
- the swap transaction holds the append lock, which every appending transaction takes first: no
  worker is between its append and its COMMIT, so the events committed are all the events there
  are, the twins are brought up to the last of them in this same transaction, and at COMMIT they
  equal a fold of the whole store. Workers blocked on the lock go on after COMMIT; at READ
  COMMITTED their next statements resolve `tickets` etc. afresh, to the swapped-in tables, and
  they apply every later event there, exactly as before;
- an interrupted replay touches nothing live: everything before the swap happens in the rebuild
  schema, and the swap is one transaction. The next replay drops the leftover schema; the replay
  lock and a paused append lock go away with the killed process's connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from services.replay import schema, snapshots
from services.replay.catchup import catch_up
from services.replay.comparison import TableComparison, compare, log_comparisons
from services.replay.loader import bulk_load
from services.replay.locks import (
    SET_LOCAL_LIMITS,
    STALLED_SESSION,
    LockTimeout,
    appends_paused,
    connect,
    milliseconds,
    replay_lock,
)
from services.replay.tasks import spread
from shared import eventstore
from shared.errors import DeskLedgerError
from shared.faults import REPLAY_AFTER_COPY, REPLAY_BEFORE_SWAP_COMMIT, fault_point
from shared.projections.base import Projection

log = structlog.get_logger()

# A catch-up pass that finds no more than this many events is close enough to the head.
CLOSE_ENOUGH = 2000
MAX_CATCH_UP_PASSES = 20
CLEAN_UP_SECONDS = 10.0


class RebuildError(DeskLedgerError):
    """The rebuild could not finish; the live tables are as they were."""


@dataclass(frozen=True)
class RebuildOptions:
    projections: tuple[Projection[Any, Any], ...]
    dry_run: bool = False
    fetch_size: int = 2000
    # Connections reading the store side by side, each a range of tickets: the server sends an
    # event for ~5 us of CPU, but one connection's index scan in ticket order also waits on
    # heap pages; two read and decode a million events 25-35 % faster (tests/benchmarks/scan).
    readers: int = 2
    lock_timeout: float = 2.0
    attempts: int = 10
    listed_keys: int = 1000
    # The zone UseDesk's date text is read in; None: the instants as stored.
    tz: ZoneInfo | None = None


@dataclass
class RebuildReport:
    tables: tuple[str, ...]
    events: int = 0
    # Of those, appended after the bulk load's snapshot and applied by catch-up passes.
    caught_up: int = 0
    rows: int = 0
    comparisons: list[TableComparison] = field(default_factory=list)
    swapped: bool = False

    @property
    def differences(self) -> int:
        return sum(c.differing for c in self.comparisons)


class Rebuild:
    def __init__(self, database_url: str, options: RebuildOptions) -> None:
        self.database_url = database_url
        self.options = options
        self.projections = list(options.projections)
        self.tables = tuple(p.table for p in options.projections)
        self.report = RebuildReport(self.tables)
        self.live = ""

    async def run(self) -> RebuildReport:
        """Rebuild, compare and (unless a dry run) swap; the live tables change only at the swap."""
        async with replay_lock(self.database_url):
            conns: list[asyncpg.Connection] = []
            try:
                for _ in range(1 + max(1, self.options.readers)):
                    conns.append(await connect(self.database_url))
                await self._run(conns[0], conns[1:])
            except BaseException:
                await _close(*conns[1:])  # first: a reader may hold the append lock
                if conns:
                    await _clean_up(conns[0])
                raise
            finally:
                await _close(*conns)
        return self.report

    async def _run(self, writer: asyncpg.Connection, readers: list[asyncpg.Connection]) -> None:
        self.live = await schema.live_schema(writer, self.tables)
        await schema.create_rebuild(writer, self.live, self.tables)
        last, loader = await bulk_load(
            readers, writer, self.projections, self.options.fetch_size, self.options.tz
        )
        self.report.events += loader.events
        self.report.rows += loader.rows
        fault_point(REPLAY_AFTER_COPY)
        await spread(self.tables, [writer, *readers], self._finish_table)
        last = await self._catch_up(writer, last)
        last = await self._compare(writer, readers, last)
        if self.options.dry_run:
            await schema.drop_rebuild(writer)
        else:
            await self._swap(writer, last)

    async def _finish_table(self, conn: asyncpg.Connection, table: str) -> None:
        await schema.finish_tables(conn, self.live, table)

    async def _catch_up_once(self, conn: asyncpg.Connection, last: int) -> tuple[int, int]:
        async with conn.transaction(isolation="repeatable_read"):
            await schema.use_rebuild(conn, self.live)
            last, count = await catch_up(
                conn, self.projections, last, self.options.fetch_size, self.options.tz
            )
        self.report.events += count
        self.report.caught_up += count
        log.info("replay_caught_up", events=count, position=last)
        return last, count

    async def _apply_after(self, conn: asyncpg.Connection, last: int) -> tuple[int, int]:
        """`catch_up` of the rebuild tables with this replay's projections and options."""
        options = self.options
        return await catch_up(conn, self.projections, last, options.fetch_size, options.tz)

    async def _catch_up(self, conn: asyncpg.Connection, last: int) -> int:
        """Passes of catch-up until one finds few events (workers may keep appending)."""
        for _ in range(MAX_CATCH_UP_PASSES):
            last, count = await self._catch_up_once(conn, last)
            if count <= CLOSE_ENOUGH:
                break
        return last

    async def _compare(
        self, writer: asyncpg.Connection, readers: list[asyncpg.Connection], last: int
    ) -> int:
        for attempt in range(1, self.options.attempts + 1):
            try:
                return await self._compare_once(writer, readers, last)
            except LockTimeout:
                log.warning("replay_compare_postponed", attempt=attempt)
                last = await self._catch_up(writer, last)
        raise RebuildError(
            "appends could not be paused for the comparison within "
            f"{self.options.lock_timeout:g} s, {self.options.attempts} times: a transaction "
            "holds the append lock for long (see pg_stat_activity); the live tables are unchanged"
        )

    async def _compare_once(
        self, writer: asyncpg.Connection, readers: list[asyncpg.Connection], last: int
    ) -> int:
        """Twins and live tables in one snapshot that reflects the same events on both sides.

        Appends are paused only while the twins take the last few events and the snapshot is
        taken; the comparison itself runs with appends going on, in that snapshot.
        """
        async with appends_paused(readers[0], self.options.lock_timeout):
            last, _ = await self._catch_up_once(writer, last)
            exporting = writer.transaction(isolation="repeatable_read", readonly=True)
            await exporting.start()
            # Taken here, before appends resume: BEGIN alone takes no snapshot.
            snapshot = await snapshots.export(writer)
        try:
            async with snapshots.joined(snapshot, readers):
                self.report.comparisons = await self._compare_tables([writer, *readers])
        finally:
            await exporting.rollback()
        log_comparisons(self.report.comparisons, last)
        return last

    async def _compare_tables(self, conns: list[asyncpg.Connection]) -> list[TableComparison]:
        """Every connection is in the one snapshot; each compares the next table when free."""
        done: dict[str, TableComparison] = {}

        async def compare_table(conn: asyncpg.Connection, table: str) -> None:
            limit = self.options.listed_keys
            done[table] = await compare(conn, self.live, schema.REBUILD_SCHEMA, table, limit)

        await spread(self.tables, conns, compare_table)
        return [done[table] for table in self.tables]

    async def _swap(self, conn: asyncpg.Connection, last: int) -> None:
        for attempt in range(1, self.options.attempts + 1):
            try:
                await self._swap_once(conn, last)
                return
            except asyncpg.LockNotAvailableError:
                log.warning("replay_swap_postponed", attempt=attempt)
                last = await self._catch_up(conn, last)
            except asyncpg.DependentObjectsStillExistError as exc:
                raise RebuildError(
                    f"cannot replace the live tables: {exc}; {exc.detail or ''} "
                    "(drop or recreate the dependent objects); the live tables are unchanged"
                ) from exc
        raise RebuildError(
            f"the live tables could not be locked for the swap within "
            f"{self.options.lock_timeout:g} s, {self.options.attempts} times; a long transaction "
            "is reading or writing them (see pg_stat_activity); the live tables are unchanged"
        )

    async def _swap_once(self, conn: asyncpg.Connection, last: int) -> None:
        async with conn.transaction():
            await conn.execute(
                SET_LOCAL_LIMITS, milliseconds(self.options.lock_timeout), STALLED_SESSION
            )
            await eventstore.lock_appends(conn)
            await schema.use_rebuild(conn, self.live)
            last, count = await catch_up(
                conn, self.projections, last, self.options.fetch_size, self.options.tz
            )
            await schema.lock_live(conn, self.live, self.tables)
            await schema.swap(conn, self.live, self.tables)
            fault_point(REPLAY_BEFORE_SWAP_COMMIT)
        self.report.events += count
        self.report.caught_up += count
        self.report.swapped = True
        log.info("projection_rebuilt", tables=list(self.tables), position=last, events=count)


async def _clean_up(conn: asyncpg.Connection) -> None:
    """Best effort: a failed replay removes its schema (the next one would do it otherwise)."""
    with contextlib.suppress(Exception):
        if not conn.is_closed():
            await asyncio.wait_for(schema.drop_rebuild(conn), CLEAN_UP_SECONDS)


async def _close(*conns: asyncpg.Connection) -> None:
    for conn in conns:
        if conn.is_closed():
            continue
        try:
            await conn.close(timeout=5)
        except Exception:
            conn.terminate()
