"""Through the real store: random order, duplicates and batch boundaries give the same rows."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.events import Event
from shared.projections import ALL
from shared.recording import record
from tests.helpers.histories import as_decoded, histories
from tests.helpers.services import ServiceUrls, database_from_template

PROJECTION_KEYS = {
    "tickets": "ticket_id",
    "ticket_status_changes": "source_id",
    "ticket_field_changes": "source_id, entry",
    "ticket_comments": "comment_id",
    "ticket_ratings": "rating_id",
}


async def projection_rows(conn: asyncpg.Connection) -> dict[str, list[Any]]:
    tables: dict[str, list[Any]] = {}
    for projection in ALL:
        key = PROJECTION_KEYS[projection.table]
        # Constant table and key names from the registry above, never from input.
        rows = await conn.fetch(f"SELECT * FROM {projection.table} ORDER BY {key}")
        tables[projection.table] = [tuple(row.values()) for row in rows]
    return tables


async def _rows_after(services: ServiceUrls, template: str, batches: list[list[Event]]) -> Any:
    async with database_from_template(services, template, prefix="dl_prop") as url:
        conn = await asyncpg.connect(url)
        try:
            for batch in batches:
                await record(conn, [as_decoded(event) for event in batch])
            return await projection_rows(conn)
        finally:
            await conn.close()


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Event], list[list[Event]]]:
    events = draw(histories())
    arrivals = list(draw(st.permutations(events)))
    arrivals += draw(st.lists(st.sampled_from(events), max_size=4))  # duplicates
    arrivals = list(draw(st.permutations(arrivals)))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(arrivals) - 1)), max_size=4)))
    batches = [arrivals[a:b] for a, b in zip([0, *cuts], [*cuts, len(arrivals)], strict=True)]
    return events, [b for b in batches if b]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries())
def test_arrival_order_duplicates_and_batches_do_not_change_rows(
    services: ServiceUrls,
    template_database: str,
    case: tuple[list[Event], list[list[Event]]],
) -> None:
    in_order, batches = case
    expected = asyncio.run(_rows_after(services, template_database, [in_order]))
    actual = asyncio.run(_rows_after(services, template_database, batches))
    assert actual == expected
