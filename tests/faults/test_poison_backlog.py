"""Poison in a backlog (issue 19): bad values queued among good webhooks cost only themselves.

Through the real ingress, with no worker running, a backlog builds up in which every tenth
webhook carries a value that once dead-lettered its whole batch: a date outside years 1-9999,
a status or a rating wider than its 32-bit column. Webhooks with a NUL character in their text
are good ones and must be stored. Then one worker drains the backlog in big batches: every good
webhook is one event (the checker), every poisoned one is a `rejected` delivery with its reason,
and the dead-letter queue stays empty.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from shared.settings import Settings
from tests.helpers.checker import Verify
from tests.helpers.driver import Driver
from tests.helpers.ingress import running_ingress
from tests.helpers.secret import TEST_SECRET
from tests.helpers.webhooks import JSON, Webhook, generate

GOOD = 300
POISON_BASE = 95_000_000


def _poison(number: int) -> dict[str, Any]:
    """The `number`-th poisoned webhook: each kind of bad value in turn."""
    ticket_id, when = POISON_BASE + number, "2024-03-05 10:00:00"
    match number % 5:
        case 0:
            comment = {
                "id": ticket_id,
                "ticket_id": ticket_id,
                "published_at": "0001-01-01 00:00:00",
            }
            return {"comment": comment}
        case 1:
            comment = {
                "id": ticket_id,
                "ticket_id": ticket_id,
                "published_at": "9999-12-31T23:00:00-05:00",
            }
            return {"comment": comment}
        case 2:
            return {"ticket": {"id": ticket_id, "status_id": 2**31, "published_at": when}}
        case 3:
            trigger = {"id": ticket_id, "ticket_id": ticket_id, "new_status": 2**63 - 1}
            return {"trigger": trigger}
        case _:
            return {"csi": {"id": ticket_id, "ticket_id": ticket_id, "rating": 2**40}}


def _with_nul(webhook: Webhook) -> Webhook:
    """A good JSON webhook whose text carries a NUL character (it must be stored)."""
    payload = json.loads(webhook.body)
    for section in payload.values():
        if isinstance(section, dict):
            for field in ("subject", "message"):
                if isinstance(section.get(field), str):
                    section[field] += "\u0000!"
    return Webhook(webhook.index, webhook.key, json.dumps(payload).encode(), webhook.content_type)


async def test_poison_in_a_backlog_is_rejected_and_nothing_good_is_lost(
    settings: Settings, db: asyncpg.Connection, verify: Verify
) -> None:
    good = generate(GOOD)
    good = [_with_nul(w) if w.content_type == JSON and w.index % 7 == 0 else w for w in good]
    poison = [
        Webhook(
            GOOD + n,
            ("poison", str(n)),
            json.dumps({"secret": TEST_SECRET, **_poison(n)}).encode(),
            JSON,
        )
        for n in range(GOOD // 10)
    ]
    mixed = [w for pair in zip(good[::10], poison, strict=True) for w in pair]
    mixed += [w for i, w in enumerate(good) if i % 10]
    async with running_ingress(settings) as url:
        driver = Driver(url, good)
        poisoned = Driver(url, poison)
        # One driver sends the mixed order; the two views split what it was told.
        sender = Driver(url, mixed, concurrency=4)
        await sender.run()
    by_index = {s.webhook.index: s for s in sender.sent}
    driver.sent = [by_index[w.index] for w in good]
    poisoned.sent = [by_index[w.index] for w in poison]
    assert all(s.acknowledged for s in sender.sent), "the ingress refused a webhook"
    await verify(driver, bad_inputs=len(poison))
    poisoned_ids = [s.acknowledged.delivery_id for s in poisoned.sent if s.acknowledged]
    rows = await db.fetch(
        "SELECT outcome, error FROM deliveries WHERE delivery_id = ANY($1::uuid[])", poisoned_ids
    )
    assert len(rows) == len(poison)
    assert {row["outcome"] for row in rows} == {"rejected"}
    assert all("out of range" in row["error"] or "from 0 to" in row["error"] for row in rows)
    nul = await db.fetchval("SELECT count(*) FROM events WHERE data::text LIKE '%\ufffd!%'")
    assert nul > 0, "no webhook with a NUL character was stored"
