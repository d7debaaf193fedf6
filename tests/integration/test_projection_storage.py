"""How `tickets` rows are stored (issue 18): what each rewrite writes, and that it reads back."""

from __future__ import annotations

import json
import random

import asyncpg
import msgspec

from shared.projections import tickets
from shared.recording import record
from tests.helpers.deliveries import decoded, fixture

_WORDS = "клиент пишет приложение падает при оплате заказ номер курьер чек код экран"
# A free-text field of ~3 KB that compresses no better than prose (repeated text would).
DESCRIPTION = " ".join(random.Random(18).choice(_WORDS.split()) + str(n) for n in range(300))


def _created() -> dict[str, object]:
    body = fixture("ticket_created.json")
    body["ticket"]["custom_fields"].append({"id": 70, "name": "Описание", "value": DESCRIPTION})
    return body


async def _toast_chunks(db: asyncpg.Connection) -> set[int]:
    """The values now stored out of line for `tickets` (their TOAST chunk ids)."""
    toast = await db.fetchval(
        "SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'tickets'::regclass"
    )
    rows = await db.fetch(f"SELECT DISTINCT chunk_id FROM {toast}")  # a catalog name
    return {row["chunk_id"] for row in rows}


async def test_custom_field_values_are_stored_once_and_read_back(db: asyncpg.Connection) -> None:
    await record(db, [decoded(_created())])
    stored = await db.fetchval("SELECT fold_state FROM tickets WHERE ticket_id = 3318840")
    assert DESCRIPTION.encode() not in stored  # only in the `custom_fields` column
    # A later batch folds onto the loaded state: the values come back from the column, and a
    # change of another field keeps them.
    change = fixture("ticket_changed.json")
    change["trigger"]["data"] = [{"target": "ticket_field", "field_id": 64, "value": "iOS"}]
    await record(db, [decoded(change)])
    fields = json.loads(
        await db.fetchval("SELECT custom_fields FROM tickets WHERE ticket_id = 3318840")
    )
    assert fields["70"] == {"name": "Описание", "value": DESCRIPTION}
    assert fields["64"] == {"name": "Платформа", "value": "iOS"}
    record_row = await db.fetchrow(tickets.PROJECTION.load_sql or "", [3318840])
    assert record_row is not None
    _, state = tickets.load(record_row)
    assert state.custom_fields["70"][2] == DESCRIPTION
    assert state.custom_fields["64"][2] == "iOS"


async def test_a_state_stored_with_its_values_loads_the_same(db: asyncpg.Connection) -> None:
    """States written before issue 18 kept the values in `fold_state` too."""
    await record(db, [decoded(_created())])
    row = await db.fetchrow(tickets.PROJECTION.load_sql or "", [3318840])
    assert row is not None
    _, state = tickets.load(row)
    old = msgspec.msgpack.Encoder(order="deterministic").encode(state)
    assert DESCRIPTION.encode() in old
    stored_before = {"ticket_id": 3318840, "fold_state": old, "custom_fields": row["custom_fields"]}
    _, again = tickets.load(stored_before)  # type: ignore[arg-type]
    assert again == state


async def test_an_unchanged_custom_fields_value_is_not_written_again(
    db: asyncpg.Connection,
) -> None:
    await record(db, [decoded(_created())])
    stored = await _toast_chunks(db)
    assert stored  # the custom fields went out of line
    await record(db, [decoded(fixture("comment_created.json"))])
    assert await _toast_chunks(db) == stored  # the comment's row version points at them
    change = fixture("ticket_changed.json")
    change["trigger"]["data"] = [{"target": "ticket_field", "field_id": 70, "value": "короче"}]
    await record(db, [decoded(change)])
    assert await _toast_chunks(db) != stored  # a changed value is written again
