"""Several connections reading one snapshot: PostgreSQL's exported snapshots.

A REPEATABLE READ transaction can export its snapshot; others import it as the first statement
of their own REPEATABLE READ transactions, and then see exactly what it sees. The replay reads
the store with several connections that way, and compares the tables with two.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg

EXPORT_SNAPSHOT = "SELECT pg_export_snapshot()"
SET_SNAPSHOT = "SELECT format('SET TRANSACTION SNAPSHOT %L', $1::text)"


async def export(conn: asyncpg.Connection) -> str:
    """The snapshot of `conn`'s open REPEATABLE READ transaction, taken now if not yet taken.

    A transaction's snapshot is taken by its first query, not by BEGIN: call this at the moment
    the snapshot must show. It stays importable while that transaction is open.
    """
    snapshot: str = await conn.fetchval(EXPORT_SNAPSHOT)
    return snapshot


@asynccontextmanager
async def joined(snapshot: str, others: Sequence[asyncpg.Connection]) -> AsyncIterator[None]:
    """`others` see exactly `snapshot` (from `export`) in read-only transactions for the block."""
    async with AsyncExitStack() as stack:
        for conn in others:
            # Built before BEGIN: SET TRANSACTION SNAPSHOT must come before any query in it.
            importing = await conn.fetchval(SET_SNAPSHOT, snapshot)
            await stack.enter_async_context(
                conn.transaction(isolation="repeatable_read", readonly=True)
            )
            await conn.execute(importing)
        yield
