"""Two documented promises, held to what the code does (issue 19, point 6).

- Duplicate JSON keys are refused at the edge with 400: a parser keeps one of the two values,
  and `{"secret": "x", "secret": "<valid>"}` must not authenticate.
- `events.position` is ordered, and a reader that follows it never skips an event. It is not
  gap-free: a conflicting insert or a rolled-back batch consumes sequence values.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from services.ingress.app import WEBHOOK_PATH
from shared import eventstore
from shared.recording import record
from shared.settings import Settings
from tests.helpers.deliveries import decoded
from tests.helpers.ingress import running_ingress
from tests.helpers.replay import ticket_story
from tests.helpers.secret import TEST_SECRET
from tests.helpers.worker import queue_depths


@pytest.fixture
async def url(settings: Settings) -> AsyncIterator[str]:
    async with running_ingress(settings) as base:
        yield base + WEBHOOK_PATH


@pytest.mark.parametrize(
    "body",
    [
        # The wrong secret first, the right one last: a last-wins parser would authenticate it.
        '{"secret": "wrong", "secret": "SECRET", "ping": 1}',
        '{"secret": "SECRET", "ticket": {"id": 1, "id": 2}}',
        '{"secret": "SECRET", "\\u0073ecret": "SECRET", "ping": 1}',
        '{"secret": "SECRET", "csi": {"id": 1, "ticket_id": 2}, "csi": {"id": 3}}',
    ],
)
async def test_duplicate_json_keys_are_refused_and_nothing_is_published(
    settings: Settings, url: str, body: str
) -> None:
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            url,
            data=body.replace("SECRET", TEST_SECRET).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = await response.json()
    assert response.status == 400
    assert answer["error"] == "bad_body"
    assert "appears twice in one object" in answer["detail"]
    assert TEST_SECRET not in json.dumps(answer)
    assert await queue_depths(settings) == (0, 0)


async def test_a_key_spelled_twice_in_different_objects_is_fine(url: str) -> None:
    body = {"secret": TEST_SECRET, "ping": 1, "a": {"id": 1, "x": "1:2"}, "b": [{"id": 2}]}
    async with aiohttp.ClientSession() as http:
        response = await http.post(url, json=body)
    assert response.status == 200


async def test_a_reader_following_position_skips_nothing_though_positions_have_gaps(
    database_url: str, db: asyncpg.Connection
) -> None:
    numbers = itertools.count(1)
    stop = asyncio.Event()

    async def writer(rollback_every: int) -> None:
        conn = await asyncpg.connect(database_url)
        try:
            for turn in range(40):
                number = next(numbers)
                # A new ticket's story, plus the creation of an earlier one (a conflict).
                batch = [decoded(json.loads(body)) for _, body in ticket_story(number)]
                batch.append(decoded(json.loads(ticket_story(max(1, number - 3))[0][1])))
                if turn % rollback_every == 0:
                    with pytest.raises(RuntimeError):
                        await record(conn, batch, before_commit=_roll_back)
                    continue
                await record(conn, batch)
        finally:
            await conn.close()

    async def follower() -> list[int]:
        conn = await asyncpg.connect(database_url)
        seen: list[int] = []
        try:
            while True:
                stopping = stop.is_set()  # read before the pass: the last pass sees everything
                after = seen[-1] if seen else 0
                async for chunk in eventstore.read_all(conn, after=after, chunk=7):
                    seen.extend(stored.position for stored in chunk)
                if stopping:
                    return seen
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    reading = asyncio.create_task(follower())
    await asyncio.gather(writer(3), writer(4), writer(5))
    stop.set()
    seen = await reading
    stored = [row["position"] for row in await db.fetch("SELECT position FROM events ORDER BY 1")]
    assert seen == stored, "the follower skipped or repeated an event"
    assert seen == sorted(set(seen))
    assert stored[-1] > len(stored), "no gap: the test did not exercise what it claims"


def _roll_back() -> None:
    raise RuntimeError("roll this batch back after its appends")
