"""The worker against real RabbitMQ and PostgreSQL: outcomes, duplicates, poison, outages."""

from __future__ import annotations

import asyncio
import json
import re
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage

from services.status import gather, render
from services.worker import metrics
from services.worker.consumer import Worker
from shared import eventstore
from shared.recording import Decoded, record
from shared.settings import Settings
from shared.usedesk import Kind
from tests.helpers.deliveries import decoded, fixture, story_bodies
from tests.helpers.services import free_port
from tests.helpers.tcpproxy import tcp_proxy
from tests.helpers.worker import drain, publish, queue_depths


async def test_story_through_the_queue(settings: Settings, db: asyncpg.Connection) -> None:
    ids = await publish(settings, story_bodies())
    await drain(settings)
    rows = await db.fetch("SELECT delivery_id, outcome, kind FROM deliveries")
    assert {row["delivery_id"] for row in rows} == set(ids)
    assert {row["outcome"] for row in rows} == {"recorded"}
    assert await db.fetchval("SELECT count(*) FROM events") == 4
    assert await db.fetchval("SELECT status_id FROM tickets WHERE ticket_id = 3318840") == 2
    assert await queue_depths(settings) == (0, 0)


async def test_duplicates_and_poison(settings: Settings, db: asyncpg.Connection) -> None:
    changed = json.dumps(fixture("ticket_changed.json")).encode()
    poison: list[tuple[Kind, bytes]] = [
        ("unknown", b"\x00\x01 not json at all"),
        ("ticket_changed", b'{"secret": "x", "trigger": {"id": [1], "ticket_id": 5}}'),
    ]
    await publish(settings, [("ticket_changed", changed)] * 3 + poison + [("ping", b'{"ping":1}')])
    await drain(settings)
    outcomes = await db.fetch("SELECT outcome, count(*) AS n FROM deliveries GROUP BY outcome")
    assert {row["outcome"]: row["n"] for row in outcomes} == {
        "recorded": 1,
        "duplicate": 2,
        "rejected": 2,
        "ignored": 1,
    }
    assert await db.fetchval("SELECT count(*) FROM events") == 1
    assert await queue_depths(settings) == (0, 0)


async def test_two_workers_on_overlapping_duplicates(
    settings: Settings, db: asyncpg.Connection
) -> None:
    bodies = story_bodies() * 5
    await publish(settings, bodies)
    small = settings.replace(batch_size=3, prefetch=4)
    await asyncio.gather(drain(small), drain(small, concurrency=2))
    assert await db.fetchval("SELECT count(*) FROM events") == 4
    assert await db.fetchval("SELECT count(*) FROM deliveries") == len(bodies)
    assert await db.fetchval("SELECT count(*) FROM deliveries WHERE outcome = 'recorded'") == 4
    assert await db.fetchval("SELECT comments_count FROM tickets") == 1


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'root'}@127.0.0.1:{port}"))


async def test_database_outage_pauses_and_nothing_is_dead_lettered(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """PostgreSQL unreachable mid-stream (a cut link), then back: backlog drained, no DLQ."""
    target = urlsplit(settings.database_url)
    async with tcp_proxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        proxied = settings.replace(
            database_url=_via(settings.database_url, proxy.port), batch_size=2
        )
        worker = Worker(proxied, burst=False)
        running = asyncio.create_task(worker.run())
        await publish(settings, story_bodies()[:2])
        await _wait_for(db, "SELECT count(*) FROM events", 2)
        proxy.cut()
        await publish(settings, story_bodies()[2:])
        await asyncio.sleep(2)  # the worker now retries against a dead database
        assert await db.fetchval("SELECT count(*) FROM events") == 2
        assert not worker.ready()
        proxy.restore()
        await _wait_for(db, "SELECT count(*) FROM events", 4)
        worker.stop()
        await asyncio.wait_for(running, 30)
    assert await queue_depths(settings) == (0, 0)
    assert await db.fetchval("SELECT count(*) FROM deliveries") == 4


async def _wait_for(db: asyncpg.Connection, query: str, expected: int) -> None:
    for _ in range(300):
        if await db.fetchval(query) == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{query} never reached {expected}: {await db.fetchval(query)}")


async def test_reader_following_position_misses_nothing(database_url: str) -> None:
    """Concurrent appenders, one reader polling `read_all(after=last)`: every position once."""

    async def appender(number: int) -> None:
        conn = await asyncpg.connect(database_url)
        try:
            for batch in range(15):
                payloads = [
                    {
                        "comment": {
                            "id": number * 10_000 + batch * 10 + i,
                            "ticket_id": number,
                            "published_at": "2024-03-05 11:52:40",
                        }
                    }
                    for i in range(5)
                ]
                await record(conn, [decoded(p) for p in payloads])
        finally:
            await conn.close()

    seen: list[int] = []
    reader = await asyncpg.connect(database_url)
    writers = asyncio.gather(*(appender(n) for n in range(1, 5)))
    try:
        while not writers.done() or await eventstore.high_water_mark(reader) > (seen or [0])[-1]:
            async for chunk in eventstore.read_all(reader, after=(seen or [0])[-1], chunk=7):
                seen.extend(stored.position for stored in chunk)
            await asyncio.sleep(0)
        await writers
    finally:
        await reader.close()
    assert len(seen) == 4 * 15 * 5
    assert seen == sorted(set(seen))


async def test_status_reports_depths_outcomes_and_age(
    settings: Settings, db: asyncpg.Connection
) -> None:
    await publish(settings, [*story_bodies(), ("unknown", b"{]")])
    report, ok = await gather(settings)
    assert ok
    assert report["broker"]["queue"]["messages"] == 5
    assert report["broker"]["dead_letter_queue"]["messages"] == 0
    await drain(settings)
    report, ok = await gather(settings)
    assert ok
    assert report["broker"]["queue"]["messages"] == 0
    assert report["database"]["deliveries_last_hour"] == {"recorded": 4, "rejected": 1}
    assert report["database"]["rejected"] == 1
    assert report["database"]["last_position"] >= 4
    assert report["database"]["newest_event_age_s"] >= 0
    assert report["database"]["suspected_gaps"] == 1
    assert "recorded 4, rejected 1; rejected in all: 1" in render(report)


async def test_worker_metrics_endpoint(settings: Settings) -> None:
    await publish(settings, story_bodies())
    worker = Worker(settings)
    port = free_port()
    runner = await metrics.start_http(port, worker.ready)
    assert runner is not None
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert response.status == 503  # not consuming yet
            await drain(settings)
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()
    assert 'deskledger_worker_deliveries_total{outcome="recorded"}' in text
    assert "deskledger_worker_batch_seconds_bucket" in text
    lag = re.search(r"^deskledger_worker_lag_seconds_count (\S+)$", text, re.MULTILINE)
    assert lag is not None
    assert float(lag.group(1)) >= 4  # one per delivery, receipt to commit


async def test_an_unexpected_error_returns_the_batch_and_the_loop_goes_on(
    settings: Settings, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that breaks a batch (here: decoding raises once) must not end the batch loop."""
    original = Worker._decode
    calls = {"n": 0}

    def flaky(self: Worker, message: AbstractIncomingMessage) -> Decoded:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in a batch")
        return original(self, message)

    monkeypatch.setattr(Worker, "_decode", flaky)
    await publish(settings, story_bodies())
    await drain(settings)
    assert calls["n"] > 4  # the batch came back and was decoded again
    assert await db.fetchval("SELECT count(*) FROM events") == 4
    assert await db.fetchval("SELECT count(*) FROM deliveries WHERE outcome = 'recorded'") == 4
    assert await queue_depths(settings) == (0, 0)
