"""The replay's baseline: read every event in ticket order and decode it, nothing else.

    python -m tests.benchmarks.scan DATABASE_URL
prints `{"events": N, "seconds": S}`. Run as its own process so its peak RSS compares with the
replay's.
"""

from __future__ import annotations

import json
import sys
import time

import asyncpg
import uvloop

from shared.events import decode_event

READ = "SELECT convert_to(data::text, 'UTF8') FROM events ORDER BY ticket_id, position"
CHUNK = 2000


async def scan(url: str) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        count = 0
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            cursor = await conn.cursor(READ)
            while rows := await cursor.fetch(CHUNK):
                for row in rows:
                    decode_event(row[0])
                count += len(rows)
        return {"events": count, "seconds": time.perf_counter() - started}
    finally:
        await conn.close()


if __name__ == "__main__":
    print(json.dumps(uvloop.run(scan(sys.argv[1]))), flush=True)
