"""The bulk load: fold every event up to a high-water mark, write the rows with COPY.

Events are read ordered by `(ticket_id, position)` through server-side cursors; the index
`events_ticket_id_position_idx` serves that order, so PostgreSQL sorts nothing. Every projection
key belongs to one ticket, so once a ticket's last event is read its rows are final: they are
written and forgotten, and memory holds a few chunks whatever the size of the store. The folds
are the live ones (`fold_into`, then `row`), given each key's events in position order.

What overlaps: several reader connections (all in one exported snapshot) each read a range of
tickets and fetch their next chunk while this process decodes and folds (`events.data` arrives
as the bytes PostgreSQL stored, `eventstore.raw_json`); a writer connection COPYs earlier rows
into the rebuild schema meanwhile. Bounded queues keep memory flat, and the fold yields to
the event loop between projections so that the readers' chunks keep flowing in.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Sequence
from itertools import pairwise
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import asyncpg

from services.replay import snapshots
from services.replay.progress import Progress
from services.replay.schema import REBUILD_SCHEMA
from services.replay.tasks import together
from shared import eventstore
from shared.projections.base import Projection, fold_into, rows_of

SET_LZ4 = "SET default_toast_compression = lz4"
GC_YOUNG_THRESHOLD = 50_000

T = TypeVar("T")
Bounds = tuple[int | None, int | None]
Rows = list[tuple[Any, ...]]
_Batch = tuple[Projection[Any, Any], Rows]
_Chunk = Sequence[asyncpg.Record]


async def _fast_compression(writer: asyncpg.Connection) -> None:
    """Compress this session's large values with lz4 where the server has it.

    Only how the rows we write are stored changes (readers decompress either kind); pglz, the
    default, made COPY of the `tickets` rows (a few KB of fold state each) twice as slow.
    """
    with contextlib.suppress(asyncpg.PostgresError):
        await writer.execute(SET_LZ4)


def ranges(splits: Sequence[int | None]) -> list[Bounds]:
    """Ticket ranges cut at `splits`, covering every ticket id once."""
    inner = sorted({cut for cut in splits if cut is not None})
    cuts: list[int | None] = [None, *inner, None]
    return list(pairwise(cuts))


async def bulk_load(
    readers: Sequence[asyncpg.Connection],
    writer: asyncpg.Connection,
    projections: Sequence[Projection[Any, Any]],
    fetch_size: int,
    tz: ZoneInfo | None = None,
) -> tuple[int, Loader]:
    """Load one snapshot of the store; returns its high-water mark and the finished Loader."""
    first, *others = readers
    async with first.transaction(isolation="repeatable_read", readonly=True):
        until = await eventstore.high_water_mark(first)
        start = await eventstore.first_position(first)
        splits = await eventstore.ticket_splits(first, len(readers))
        # Positions below the mark: a close upper bound of the events that costs nothing.
        progress = Progress("rebuild", max(0, until - start + 1))
        loader = Loader(writer, projections, progress, fetch_size=fetch_size, tz=tz)
        async with snapshots.joined(await snapshots.export(first), others):
            await loader.load(until, list(zip(readers, ranges(splits), strict=False)))
    # Where the pipeline waited: on PostgreSQL reading the store, or on COPY writing rows.
    progress.close(
        rows_written=loader.rows,
        waited_for_reads_s=round(loader.waited["read"], 2),
        waited_for_writes_s=round(loader.waited["write"], 2),
        decode_cpu_s=round(loader.cpu["decode"], 2),
        fold_cpu_s=round(loader.cpu["fold"], 2),
    )
    return until, loader


def _last_ticket_start(rows: _Chunk) -> int:
    """Index of the first row of the last ticket in `rows`: it may go on in the next chunk."""
    last = rows[-1][0]
    cut = len(rows) - 1
    while cut > 0 and rows[cut - 1][0] == last:
        cut -= 1
    return cut


class Loader:
    """One bulk load. Each reader is in a REPEATABLE READ transaction on the same snapshot."""

    def __init__(
        self,
        writer: asyncpg.Connection,
        projections: Sequence[Projection[Any, Any]],
        progress: Progress,
        *,
        fetch_size: int = 2000,
        tz: ZoneInfo | None = None,
        copy_size: int = 2000,
    ) -> None:
        self.writer = writer
        self.projections = projections
        self.progress = progress
        self.fetch_size = fetch_size
        # The zone UseDesk's date text is read in (DESKLEDGER_SOURCE_TIMEZONE).
        self.tz = tz
        self.copy_size = copy_size
        self.events = 0
        self.rows = 0
        # Seconds this process sat waiting for the readers' chunks / room in the writer queue.
        self.waited = {"read": 0.0, "write": 0.0}
        # CPU seconds of this process decoding events / folding them into rows (the rest of its
        # CPU: receiving rows from PostgreSQL, encoding COPY data, the event loop).
        self.cpu = {"decode": 0.0, "fold": 0.0}
        self._buffers: dict[str, Rows] = {p.table: [] for p in projections}
        self._chunks: asyncio.Queue[_Chunk | None] = asyncio.Queue(maxsize=2)
        self._batches: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=2)

    async def load(self, until: int, readers: Sequence[tuple[asyncpg.Connection, Bounds]]) -> int:
        """Fold and write every event with position <= `until`; returns how many were read."""
        await _fast_compression(self.writer)
        # Millions of short-lived objects (events, states, rows) that form no cycles: collecting
        # the youngest generation every 700 allocations, the default, scans them for nothing.
        thresholds = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
        try:
            await together(
                self._write(),
                self._fold_all(len(readers)),
                *(self._read(conn, until, bounds) for conn, bounds in readers),
            )
        finally:
            gc.set_threshold(*thresholds)
        return self.events

    async def _read(self, conn: asyncpg.Connection, until: int, bounds: Bounds) -> None:
        """Chunks of whole tickets from one range, the next one always being fetched."""
        cursor = await conn.cursor(eventstore.READ_BY_TICKET, until, *bounds)
        carry: list[asyncpg.Record] = []
        pending = asyncio.ensure_future(cursor.fetch(self.fetch_size))
        try:
            while rows := await pending:
                pending = asyncio.ensure_future(cursor.fetch(self.fetch_size))
                rows = carry + rows if carry else rows
                cut = _last_ticket_start(rows)
                carry = rows[cut:]
                if cut:
                    await self._chunks.put(rows[:cut])
            await self._chunks.put(carry)
            await self._chunks.put(None)
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, asyncpg.InterfaceError):
                    await pending

    async def _fold_all(self, readers: int) -> None:
        while readers:
            chunk = await self._waiting("read", self._chunks.get())
            if chunk is None:
                readers -= 1
            else:
                await self._fold(chunk)
        for projection in self.projections:
            await self._flush(projection)
        await self._waiting("write", self._batches.put(None))

    async def _fold(self, rows: _Chunk) -> None:
        if not rows:
            return
        started = time.process_time()
        events = [eventstore.decode_row(row[1], row[2], row[3], self.tz) for row in rows]
        self.cpu["decode"] += time.process_time() - started
        for projection in self.projections:
            await asyncio.sleep(0)  # let the readers' chunks arrive meanwhile
            started = time.process_time()
            states: dict[Any, Any] = {}
            fold_into(projection, states, events)
            buffer = self._buffers[projection.table]
            buffer.extend(rows_of(projection, states.values()))
            self.cpu["fold"] += time.process_time() - started
            if len(buffer) >= self.copy_size:
                await self._flush(projection)
        self.events += len(rows)
        self.progress.advance(len(rows))

    async def _flush(self, projection: Projection[Any, Any]) -> None:
        buffer = self._buffers[projection.table]
        if buffer:
            self._buffers[projection.table] = []
            await self._waiting("write", self._batches.put((projection, buffer)))

    async def _waiting(self, what: str, awaitable: Awaitable[T]) -> T:
        """Await, adding the time spent to `waited[what]`: where the pipeline is held up."""
        started = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.waited[what] += time.perf_counter() - started

    async def _write(self) -> None:
        while (batch := await self._batches.get()) is not None:
            projection, rows = batch
            await self.writer.copy_records_to_table(
                projection.table,
                records=rows,
                columns=list(projection.columns),
                schema_name=REBUILD_SCHEMA,
            )
            self.rows += len(rows)
