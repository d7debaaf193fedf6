"""End to end: POST through the real ingress app, drain the worker, assert on the rows."""

from __future__ import annotations

import json
import random

import aiohttp
import asyncpg

from shared.settings import Settings
from tests.helpers.deliveries import STORY, fixture
from tests.helpers.ingress import running_ingress
from tests.helpers.secret import TEST_SECRET
from tests.helpers.worker import drain, queue_depths

WEBHOOK = "/webhooks/usedesk"


async def _post(http: aiohttp.ClientSession, url: str, payload: dict[str, object]) -> str:
    async with http.post(url + WEBHOOK, json={**payload, "secret": TEST_SECRET}) as response:
        assert response.status == 200, await response.text()
        delivery_id: str = (await response.json())["delivery_id"]
        return delivery_id


async def test_the_fixture_story_shuffled_and_duplicated(
    settings: Settings, db: asyncpg.Connection
) -> None:
    arrivals = [*STORY, "ticket_changed.json", "comment_created.json"]
    random.Random(7).shuffle(arrivals)
    async with running_ingress(settings) as url, aiohttp.ClientSession() as http:
        ids = [await _post(http, url, fixture(name)) for name in arrivals]
        ids.append(await _post(http, url, {"ping": 1}))
        ids.append(await _post(http, url, {"trigger": {"id": "not a number", "ticket_id": 1}}))
    await drain(settings)

    outcomes = await db.fetch("SELECT delivery_id::text AS id, outcome FROM deliveries")
    assert sorted(row["id"] for row in outcomes) == sorted(ids)  # every 200 is accounted for
    counts: dict[str, int] = {}
    for row in outcomes:
        counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    assert counts == {"recorded": 4, "duplicate": 2, "ignored": 1, "rejected": 1}

    ticket = await db.fetchrow("SELECT * FROM tickets WHERE ticket_id = 3318840")
    assert ticket is not None
    assert (ticket["status_id"], ticket["assignee_id"], ticket["rating"]) == (2, 48211, 3)
    assert ticket["comments_count"] == 1
    assert ticket["partial"] is False
    assert ticket["suspected_gaps"] == 1
    assert await queue_depths(settings) == (0, 0)


async def test_no_secret_reaches_the_database(settings: Settings, db: asyncpg.Connection) -> None:
    async with running_ingress(settings) as url, aiohttp.ClientSession() as http:
        await _post(http, url, fixture("ticket_created.json"))
        await _post(http, url, fixture("ticket_changed.json"))
    await drain(settings)
    bodies = [row["body"] for row in await db.fetch("SELECT body FROM deliveries")]
    events = [row["data"] for row in await db.fetch("SELECT data::text AS data FROM events")]
    assert len(bodies) == 2
    for text in [*(b.decode() for b in bodies), *events]:
        assert TEST_SECRET not in text
        assert "b7Qz-19fk=pL0" not in text  # custom_blocks[].secret_key of the fixtures
    stored = json.loads(bodies[0])
    assert stored.get("secret") != TEST_SECRET
