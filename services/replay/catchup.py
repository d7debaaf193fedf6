"""Catching the rebuild tables up with the events appended after an earlier read.

The events after `after`, in position order, go through `base.apply`, the very path the live
worker takes, against the rebuild tables: the caller's transaction has pointed the search path
at the rebuild schema. Positions visible in any one snapshot form a prefix of the store (appends
are serialised, see `shared.eventstore`), so reading `position > after` within one snapshot
misses nothing, and the caller passes the last position applied to the next call, so nothing is
applied twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from shared.db import Conn
from shared.events import decode_event
from shared.eventstore import StoredEvent
from shared.projections.base import Projection, apply

READ_AFTER = """
SELECT position, data::text AS data, delivery_id
FROM events
WHERE position > $1
ORDER BY position
"""


def quiet(projection: Projection[Any, Any]) -> Projection[Any, Any]:
    """The projection without its live-only observer: the worker has logged those already."""
    return dataclasses.replace(projection, observe=None)


async def catch_up(
    conn: Conn, projections: Sequence[Projection[Any, Any]], after: int, chunk: int = 5000
) -> tuple[int, int]:
    """Apply every event after `after` visible to the current transaction.

    Returns the last position applied (`after` when there was none) and the number of events.
    """
    last, count = after, 0
    cursor = await conn.cursor(READ_AFTER, after)
    while rows := await cursor.fetch(chunk):
        events = [
            StoredEvent(row["position"], decode_event(row["data"]), row["delivery_id"])
            for row in rows
        ]
        for projection in projections:
            await apply(conn, projection, events)
        last = events[-1].position
        count += len(events)
    return last, count
