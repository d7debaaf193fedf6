"""A worker SIGKILLed before or after COMMIT: every event ends up stored exactly once."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import pytest

from shared.faults import WORKER_AFTER_COMMIT, WORKER_BEFORE_COMMIT
from shared.settings import Settings
from tests.helpers.deliveries import story_bodies
from tests.helpers.services import deskledger
from tests.helpers.worker import drain, publish, queue_depths


@pytest.mark.parametrize("point", [WORKER_BEFORE_COMMIT, WORKER_AFTER_COMMIT])
async def test_killed_worker_loses_and_doubles_nothing(
    settings: Settings, db: asyncpg.Connection, point: str
) -> None:
    ids = await publish(settings, story_bodies())
    process = await deskledger(
        settings,
        "worker",
        extra_env={"DESKLEDGER_FAULT_POINT": point},
        stdout=asyncio.subprocess.DEVNULL,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == -signal.SIGKILL, stderr.decode()
    assert b"fault_point_reached" in stderr
    committed = await db.fetchval("SELECT count(*) FROM events")
    assert committed == (4 if point == WORKER_AFTER_COMMIT else 0)

    await drain(settings)
    assert await db.fetchval("SELECT count(*) FROM events") == 4
    rows = await db.fetch("SELECT delivery_id, outcome FROM deliveries")
    assert {row["delivery_id"] for row in rows} == set(ids)
    assert {row["outcome"] for row in rows} == {"recorded"}
    assert await db.fetchval("SELECT comments_count FROM tickets") == 1
    assert await queue_depths(settings) == (0, 0)
