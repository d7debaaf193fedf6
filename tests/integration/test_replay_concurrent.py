"""A replay while writers append: no event lost, none applied twice, the swap included."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
import pytest

from services.replay import rebuild, schema
from shared.recording import Decoded, record
from shared.settings import Settings
from tests.helpers.deliveries import decoded
from tests.helpers.replay import in_order_rows, projection_rows, replay, ticket_story
from tests.helpers.services import ServiceUrls
from tests.helpers.worker import drain, publish

SEEDED = 20
WAITING_FOR_APPEND_LOCK = """
SELECT count(*)
FROM pg_locks
WHERE locktype = 'advisory' AND NOT granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def _story(number: int) -> list[Decoded]:
    return [decoded(json.loads(body)) for _, body in ticket_story(number)]


class Writers:
    """Tasks that keep recording new tickets (and a duplicate now and then) until stopped."""

    def __init__(self, database_url: str, count: int) -> None:
        self.database_url = database_url
        self.count = count
        self.batches = 0
        self.stopping = asyncio.Event()
        self.progress = asyncio.Condition()
        self._numbers = itertools.count(1000)
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Writers:
        self._tasks = [asyncio.create_task(self._write()) for _ in range(self.count)]
        await self.after(1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stopping.set()
        await asyncio.gather(*self._tasks)

    async def after(self, more: int) -> None:
        """Return once `more` further batches have committed."""
        target = self.batches + more
        async with self.progress:
            await self.progress.wait_for(lambda: self.batches >= target)

    async def _write(self) -> None:
        conn = await asyncpg.connect(self.database_url)
        try:
            while not self.stopping.is_set():
                number = next(self._numbers)
                # The story of a new ticket, and again the creation of a seeded one.
                await record(conn, [*_story(number), _story(number % SEEDED)[0]])
                async with self.progress:
                    self.batches += 1
                    self.progress.notify_all()
        finally:
            await conn.close()


def _first_call_waits(
    original: Callable[..., Awaitable[Any]], before: Callable[[], Awaitable[None]]
) -> Callable[..., Awaitable[Any]]:
    """`original`, whose first call waits for `before()` first (later ones may hold the lock)."""
    calls = itertools.count()

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if next(calls) == 0:
            await before()
        return await original(*args, **kwargs)

    return wrapper


def _then(
    original: Callable[..., AbstractAsyncContextManager[None]],
    after: Callable[[], Awaitable[None]],
) -> Callable[..., AbstractAsyncContextManager[None]]:
    """The context manager `original`, whose exit then waits for `after()`."""

    @asynccontextmanager
    async def wrapper(*args: Any) -> AsyncIterator[None]:
        async with original(*args):
            yield
        await after()

    return wrapper


async def _until_a_writer_waits(database_url: str) -> None:
    """Until some writer is blocked on the append lock (the swap holds it)."""
    conn = await asyncpg.connect(database_url)
    try:
        # Polled: PostgreSQL tells no one when a lock request starts waiting.
        while True:
            if await conn.fetchval(WAITING_FOR_APPEND_LOCK):
                return
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def test_replay_under_writers_loses_and_doubles_nothing(
    settings: Settings,
    db: asyncpg.Connection,
    services: ServiceUrls,
    template_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for number in range(SEEDED):
        await record(db, _story(number))
    url = settings.database_url
    async with Writers(url, count=3) as writers:
        # Events are appended after the bulk load's snapshot, before the first catch-up...
        monkeypatch.setattr(
            rebuild, "catch_up", _first_call_waits(rebuild.catch_up, lambda: writers.after(2))
        )
        # ...and as soon as appends resume after the comparison's snapshot was taken...
        monkeypatch.setattr(
            rebuild, "appends_paused", _then(rebuild.appends_paused, lambda: writers.after(2))
        )
        # ...and a writer is blocked on the append lock while the swap holds it.
        monkeypatch.setattr(
            schema,
            "lock_live",
            _first_call_waits(schema.lock_live, lambda: _until_a_writer_waits(url)),
        )
        report = await replay(url, fetch_size=4)
        monkeypatch.undo()
        await writers.after(3)  # and they go on writing into the swapped-in tables

    assert report.swapped
    assert report.caught_up > 0
    # Compared in a snapshot where both sides had the same events: nothing differs.
    assert report.differences == 0
    rows = await projection_rows(db)
    assert (await replay(url)).differences == 0
    assert await projection_rows(db) == rows
    assert await in_order_rows(services, template_database, db) == rows
    tickets = await db.fetchval("SELECT count(*) FROM tickets")
    assert tickets == SEEDED + writers.batches
    assert await db.fetchval("SELECT count(*) FROM events") == 4 * tickets
    assert await db.fetchval("SELECT sum(events_count) FROM tickets") == 4 * tickets


async def test_replay_while_the_worker_drains_the_queue(
    settings: Settings, db: asyncpg.Connection, services: ServiceUrls, template_database: str
) -> None:
    await publish(settings, [body for n in range(10) for body in ticket_story(n)])
    await drain(settings)
    await publish(settings, [body for n in range(10, 60) for body in ticket_story(n)])

    report, _ = await asyncio.gather(replay(settings.database_url, fetch_size=4), drain(settings))

    assert report.swapped
    assert report.differences == 0
    rows = await projection_rows(db)
    assert len(rows["tickets"]) == 60
    assert (await replay(settings.database_url)).differences == 0
    assert await projection_rows(db) == rows
    assert await in_order_rows(services, template_database, db) == rows
