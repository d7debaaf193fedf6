"""The two locks a replay takes: its own (one replay at a time) and, briefly, the append lock.

The replay lock is a session advisory lock on a dedicated connection that lives as long as the
replay: a pool connection would drop it when released, and a killed replay drops it with its
connection, so a crash never leaves it behind.

`appends_paused` holds the append lock at session level (`eventstore.pause_appends`). Session
and transaction advisory locks on one key conflict with each other, and every appending
transaction takes the transaction-level one first (`eventstore.lock_appends`), so while it is
held no append is in flight and none can start.
A lock_timeout bounds the wait: waiting for it would queue every worker behind the replay.

While the replay holds the append lock, a replay process that stops responding (suspended with
Ctrl-Z, a debugger, a frozen VM) must not stall the workers for long: its sessions get idle
timeouts (`STALLED_SESSION`), after which PostgreSQL ends them and the locks go with them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from shared import eventstore
from shared.db import Conn
from shared.errors import DeskLedgerError

# How the replay's sessions show in pg_stat_activity, for operators watching it.
APPLICATION_NAME = "deskledger replay"
# pg_advisory_lock key of `replay`: any constant, kept forever (migrate ...001, appends ...002).
REPLAY_LOCK_KEY = 7_204_611_833_092_003

TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
# A bigint advisory key is stored as classid (high 32 bits) and objid (low 32 bits); advisory
# locks belong to a database, and other databases on the server have replays of their own.
HOLDER = """
SELECT pid
FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 1
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid::bigint = ($1::bigint >> 32) AND objid::bigint = ($1::bigint & 4294967295)
LIMIT 1
"""
SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', $1, false)"
RESET_LOCK_TIMEOUT = "RESET lock_timeout"
# Far above any gap between a working replay's statements, far below what stalls ingestion.
STALLED_SESSION = "30s"
SET_STALL_LIMIT = "SELECT set_config('idle_session_timeout', $1, false)"
RESET_STALL_LIMIT = "RESET idle_session_timeout"
# The same for the transaction that swaps the tables, with its lock_timeout.
SET_LOCAL_LIMITS = """
SELECT
    set_config('lock_timeout', $1, true),
    set_config('idle_in_transaction_session_timeout', $2, true)
"""


class ReplayBusy(DeskLedgerError):
    """Another replay is running; this one changed nothing."""

    exit_code = 3


class LockTimeout(DeskLedgerError):
    """A lock the replay needs was not granted within the lock timeout."""


@asynccontextmanager
async def replay_lock(database_url: str) -> AsyncIterator[None]:
    """Hold the replay lock for the block, or raise ReplayBusy at once."""
    conn = await connect(database_url)
    try:
        if not await conn.fetchval(TRY_LOCK, REPLAY_LOCK_KEY):
            pid = await conn.fetchval(HOLDER, REPLAY_LOCK_KEY)
            raise ReplayBusy(
                f"another `deskledger replay` is running (PostgreSQL backend pid {pid}); "
                "wait for it to finish, or stop it (a stopped replay leaves the live tables as "
                "they were) and run this again"
            )
        yield
    finally:
        # Closing the connection releases the session lock.
        await conn.close()


async def connect(database_url: str) -> asyncpg.Connection:
    """A connection of the replay's own, named so in pg_stat_activity; `events.data` arrives
    on it as bytes (`eventstore.raw_json`)."""
    conn = await asyncpg.connect(
        database_url, server_settings={"application_name": APPLICATION_NAME}
    )
    try:
        await eventstore.raw_json(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


def milliseconds(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


@asynccontextmanager
async def appends_paused(conn: Conn, seconds: float) -> AsyncIterator[None]:
    """No event is appended while the block runs; LockTimeout after `seconds` of waiting.

    `conn` must stay outside any transaction meanwhile: it only holds the lock, and its idle
    timeout is what frees the workers should this process stop responding.
    """
    await conn.execute(SET_STALL_LIMIT, STALLED_SESSION)
    await conn.execute(SET_LOCK_TIMEOUT, milliseconds(seconds))
    try:
        await eventstore.pause_appends(conn)
    except asyncpg.LockNotAvailableError as exc:
        raise LockTimeout(f"appends could not be paused within {seconds:g} s") from exc
    finally:
        await conn.execute(RESET_LOCK_TIMEOUT)
    try:
        yield
    finally:
        await eventstore.resume_appends(conn)
        await conn.execute(RESET_STALL_LIMIT)
