"""Catching the rebuild tables up with the events appended after an earlier read.

The events after `after`, in position order (`eventstore.read_after`, within the caller's
snapshot), go through `base.apply`, the very path the live worker takes, against the rebuild
tables: the caller's transaction has pointed the search path at the rebuild schema. The caller
passes the last position applied to the next call, so nothing is applied twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from shared import eventstore
from shared.db import Conn
from shared.projections.base import Projection, apply


async def catch_up(
    conn: Conn,
    projections: Sequence[Projection[Any, Any]],
    after: int,
    chunk: int = 5000,
    tz: ZoneInfo | None = None,
) -> tuple[int, int]:
    """Apply every event after `after` visible to the current transaction.

    Returns the last position applied (`after` when there was none) and the number of events.
    """
    last, count = after, 0
    async for events in eventstore.read_after(conn, after, chunk=chunk, tz=tz):
        for projection in projections:
            await apply(conn, projection, events)
        last = events[-1].position
        count += len(events)
    return last, count
