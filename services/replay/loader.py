"""The bulk load: fold every event up to a high-water mark, write the rows with COPY.

Events are read ordered by `(ticket_id, position)` through a server-side cursor; the index
`events_ticket_id_position_idx` serves that order, so PostgreSQL sorts nothing. Every projection
key belongs to one ticket, so once a ticket's last event is read its rows are final: they are
written and forgotten, and memory holds a few chunks whatever the size of the store. The folds
are the live ones (`fold_into`, then `row`), given each key's events in position order.

Three things overlap, on two connections: PostgreSQL reads the next chunk while this process
decodes and folds the current one, while the writer connection COPYs earlier rows into the
rebuild schema. A bounded queue keeps the writer from falling far behind (memory), and the fold
yields to the event loop between projections so the cursor's next chunk keeps flowing in.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import asyncpg
import msgspec

from services.replay.progress import Progress
from services.replay.schema import REBUILD_SCHEMA
from services.replay.tasks import together
from shared.events import Event
from shared.eventstore import StoredEvent
from shared.projections.base import Projection, fold_into

# `data` as UTF-8 bytes: msgspec decodes them directly, and asyncpg's built-in bytea decoder costs
# less than a str (decoded, then encoded again for msgspec) or a Python-level jsonb codec.
READ_BY_TICKET = """
SELECT ticket_id, position, convert_to(data::text, 'UTF8') AS data, delivery_id
FROM events
WHERE position <= $1
ORDER BY ticket_id, position
"""

SET_LZ4 = "SET default_toast_compression = lz4"
GC_YOUNG_THRESHOLD = 50_000

_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)

T = TypeVar("T")
Rows = list[tuple[Any, ...]]
_Batch = tuple[Projection[Any, Any], Rows]
_Queue = asyncio.Queue[_Batch | None]


async def _fast_compression(writer: asyncpg.Connection) -> None:
    """Compress this session's large values with lz4 where the server has it.

    Only how the rows we write are stored changes (readers decompress either kind); pglz, the
    default, made COPY of the `tickets` rows (a few KB of fold state each) twice as slow.
    """
    with contextlib.suppress(asyncpg.PostgresError):
        await writer.execute(SET_LZ4)


def _last_ticket_start(rows: Sequence[asyncpg.Record]) -> int:
    """Index of the first row of the last ticket in `rows`: it may go on in the next chunk."""
    last = rows[-1][0]
    cut = len(rows) - 1
    while cut > 0 and rows[cut - 1][0] == last:
        cut -= 1
    return cut


class Loader:
    """One bulk load; `reader` must be inside the REPEATABLE READ transaction that chose `until`."""

    def __init__(
        self,
        reader: asyncpg.Connection,
        writer: asyncpg.Connection,
        projections: Sequence[Projection[Any, Any]],
        progress: Progress,
        *,
        fetch_size: int = 2000,
        copy_size: int = 2000,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.projections = projections
        self.progress = progress
        self.fetch_size = fetch_size
        self.copy_size = copy_size
        self.events = 0
        self.rows = 0
        # Seconds this process sat waiting for the reader's next chunk / room in the writer queue.
        self.waited = {"read": 0.0, "write": 0.0}
        self._buffers: dict[str, Rows] = {p.table: [] for p in projections}

    async def load(self, until: int) -> int:
        """Fold and write every event with position <= `until`; returns how many were read."""
        queue: _Queue = asyncio.Queue(maxsize=2)
        await _fast_compression(self.writer)
        # Millions of short-lived objects (events, states, rows) that form no cycles: collecting
        # the youngest generation every 700 allocations, the default, scans them for nothing.
        thresholds = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
        try:
            await together(self._write(queue), self._read(until, queue))
        finally:
            gc.set_threshold(*thresholds)
        return self.events

    async def _read(self, until: int, queue: _Queue) -> None:
        cursor = await self.reader.cursor(READ_BY_TICKET, until)
        carry: list[asyncpg.Record] = []
        pending = asyncio.ensure_future(cursor.fetch(self.fetch_size))
        try:
            while rows := await self._waiting("read", pending):
                pending = asyncio.ensure_future(cursor.fetch(self.fetch_size))
                rows = carry + rows if carry else rows
                cut = _last_ticket_start(rows)
                carry = rows[cut:]
                await self._fold(rows[:cut], queue)
            await self._fold(carry, queue)
            for projection in self.projections:
                await self._flush(projection, queue)
            await self._waiting("write", queue.put(None))
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, asyncpg.InterfaceError):
                    await pending

    async def _fold(self, rows: Sequence[asyncpg.Record], queue: _Queue) -> None:
        if not rows:
            return
        events = [StoredEvent(row[1], _decoder.decode(row[2]), row[3]) for row in rows]
        for projection in self.projections:
            await asyncio.sleep(0)  # let the prefetched chunk arrive meanwhile
            states: dict[Any, Any] = {}
            fold_into(projection, states, events)
            buffer = self._buffers[projection.table]
            buffer.extend(map(projection.row, states.values()))
            if len(buffer) >= self.copy_size:
                await self._flush(projection, queue)
        self.events += len(rows)
        self.progress.advance(len(rows))

    async def _flush(self, projection: Projection[Any, Any], queue: _Queue) -> None:
        buffer = self._buffers[projection.table]
        if buffer:
            self._buffers[projection.table] = []
            await self._waiting("write", queue.put((projection, buffer)))

    async def _waiting(self, what: str, awaitable: Awaitable[T]) -> T:
        """Await, adding the time spent to `waited[what]`: where the pipeline is held up."""
        started = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.waited[what] += time.perf_counter() - started

    async def _write(self, queue: _Queue) -> None:
        while (batch := await queue.get()) is not None:
            projection, rows = batch
            await self.writer.copy_records_to_table(
                projection.table,
                records=rows,
                columns=list(projection.columns),
                schema_name=REBUILD_SCHEMA,
            )
            self.rows += len(rows)
