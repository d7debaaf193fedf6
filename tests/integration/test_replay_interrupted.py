"""A replay SIGKILLed at any step leaves the live tables as they were; the next one succeeds."""

from __future__ import annotations

import json
import signal

import asyncpg
import pytest

from shared.faults import REPLAY_AFTER_COPY, REPLAY_BEFORE_SWAP_COMMIT
from shared.recording import record
from shared.settings import Settings
from tests.helpers.deliveries import decoded
from tests.helpers.replay import (
    leftovers,
    projection_rows,
    replay,
    replay_process,
    table_oids,
    ticket_story,
)


async def _record_stories(db: asyncpg.Connection, numbers: range) -> None:
    for number in numbers:
        await record(db, [decoded(json.loads(body)) for _, body in ticket_story(number)])


@pytest.mark.parametrize("point", [REPLAY_AFTER_COPY, REPLAY_BEFORE_SWAP_COMMIT])
async def test_killed_replay_leaves_live_tables_and_nothing_in_the_way(
    settings: Settings, db: asyncpg.Connection, point: str
) -> None:
    await _record_stories(db, range(6))
    expected = await projection_rows(db)
    # A wrong live value: a replay that got as far as swapping would have repaired it.
    await db.execute("UPDATE tickets SET subject = 'tampered' WHERE ticket_id = 3318842")
    tampered = await projection_rows(db)
    oids = await table_oids(db)

    status, _, err = await replay_process(settings, env={"DESKLEDGER_FAULT_POINT": point})

    assert status == -signal.SIGKILL, err
    assert f'"point": "{point}"' in err
    assert await projection_rows(db) == tampered
    assert await table_oids(db) == oids
    assert await leftovers(db) == ["deskledger_rebuild"]  # the next replay drops it
    # Workers carry on meanwhile (nothing holds the append lock), then a replay succeeds.
    await _record_stories(db, range(6, 8))
    expected_after = await projection_rows(db)
    report = await replay(settings.database_url)
    assert report.swapped
    assert [c.keys for c in report.comparisons if c.differing] == [[("3318842", "changed")]]
    rows = await projection_rows(db)
    assert rows["tickets"][:6] == expected["tickets"]  # ordered by id; the subject is repaired
    assert len(rows["tickets"]) == 8
    others = {table: r for table, r in rows.items() if table != "tickets"}
    assert others == {table: r for table, r in expected_after.items() if table != "tickets"}
    assert await leftovers(db) == []
