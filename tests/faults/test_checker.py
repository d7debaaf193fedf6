"""The checker itself: a clean run passes, and each kind of damage is seen (it can fail)."""

from __future__ import annotations

import time
import uuid

import asyncpg

from shared.recording import record
from shared.settings import Settings
from tests.helpers.checker import check
from tests.helpers.deliveries import decoded
from tests.helpers.driver import Attempt, Driver, Sent
from tests.helpers.ingress import running_ingress
from tests.helpers.webhooks import FORM, generate
from tests.helpers.worker import drain, queue_depths


async def test_a_clean_run_passes(settings: Settings) -> None:
    webhooks = generate(150, tickets=10)
    assert any(w.content_type == FORM for w in webhooks)
    async with running_ingress(settings) as url:
        driver = Driver(url, webhooks)
        await driver.run()
    await drain(settings)
    summary = await check(settings.database_url, driver)
    summary.assert_ok()
    assert (summary.sent, summary.acknowledged, summary.stored) == (150, 150, 150)
    assert summary.statuses == {"200": 150}
    assert await queue_depths(settings) == (0, 0)


async def test_an_acknowledgement_without_an_event_is_lost(settings: Settings) -> None:
    [never_posted] = generate(1)
    now = time.monotonic()
    fake = Sent(never_posted, [Attempt(now, now, 200, str(uuid.uuid4()))])
    summary = await check(settings.database_url, [fake])
    assert summary.failures == {"lost": 1, "missing_outcomes": 1}


async def test_foreign_events_and_a_miscounted_projection_are_seen(
    settings: Settings, db: asyncpg.Connection
) -> None:
    webhooks = generate(30, tickets=3)
    async with running_ingress(settings) as url:
        driver = Driver(url, webhooks)
        await driver.run()
    await drain(settings)
    (await check(settings.database_url, driver)).assert_ok()

    foreign = {"comment": {"id": 1, "ticket_id": 9_000_000, "published_at": "2024-03-05 10:00:00"}}
    await record(db, [decoded(foreign)])
    await db.execute("UPDATE tickets SET comments_count = comments_count + 5")
    summary = await check(settings.database_url, driver)
    # The foreign comment is counted by the live ticket row and by the replay alike; the
    # miscount of every ticket row is not: seen by the fold (each of 3 rows on both sides of
    # the comparison) and by `replay --dry-run` (3 rows changed).
    assert summary.failures == {"unexpected": 1, "projection_differences": 3 * 2 + 3}
