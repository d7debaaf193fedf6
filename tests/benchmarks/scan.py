"""The replay's baseline: read every event in ticket order and decode it, nothing else.

    python -m tests.benchmarks.scan DATABASE_URL [READERS]
prints `{"events": N, "seconds": S, "cpu_seconds": C}` (C: this process's CPU time). Run as its
own process so its peak RSS compares with the replay's.

It reads the way the replay's bulk load does, the fastest way the store offers: the store's own
ticket-ordered query (`eventstore.READ_BY_TICKET`) up to the high-water mark, `events.data`
as bytes (`eventstore.raw_json`), the next chunk always being fetched while this one is
decoded, and READERS connections (default 2, as the replay: 1,000,000 events were read and
decoded in 17-20 s with two, 25.5 s with one) in one snapshot, each reading a range of tickets
(`eventstore.ticket_splits`) into this one process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import asyncpg
import uvloop

from services.replay import snapshots
from services.replay.loader import Bounds, ranges
from shared import eventstore
from shared.events import decode_event

CHUNK = 2000


async def _read(conn: asyncpg.Connection, until: int, bounds: Bounds) -> int:
    count = 0
    cursor = await conn.cursor(eventstore.READ_BY_TICKET, until, *bounds)
    pending = asyncio.ensure_future(cursor.fetch(CHUNK))
    while rows := await pending:
        pending = asyncio.ensure_future(cursor.fetch(CHUNK))
        for row in rows:
            decode_event(row[2])
        count += len(rows)
    return count


async def scan(url: str, readers: int = 2) -> dict[str, float]:
    conns = [await asyncpg.connect(url) for _ in range(readers)]
    try:
        for conn in conns:
            await eventstore.raw_json(conn)
        first, *others = conns
        started, cpu = time.perf_counter(), time.process_time()
        async with first.transaction(isolation="repeatable_read", readonly=True):
            until = await eventstore.high_water_mark(first)
            splits = await eventstore.ticket_splits(first, readers)
            async with snapshots.joined(await snapshots.export(first), others):
                counts = await asyncio.gather(
                    *(
                        _read(conn, until, bounds)
                        for conn, bounds in zip(conns, ranges(splits), strict=False)
                    )
                )
        return {
            "events": sum(counts),
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu,
        }
    finally:
        for conn in conns:
            await conn.close()


if __name__ == "__main__":
    readers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    print(json.dumps(uvloop.run(scan(sys.argv[1], readers))), flush=True)
