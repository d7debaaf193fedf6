"""Every projection's one row definition against the migrated schema (issue 13).

The column lists, UPSERTs, load queries and the replay's COPY are all derived from the
`NamedTuple` row types; the migrations define the tables. This holds the two together: same
columns, same order, same types, same nullability, and the conflict key is the primary key.
"""

from __future__ import annotations

import asyncpg
import pytest

from shared.projections import ALL
from shared.projections.base import Projection

COLUMNS = """
SELECT attname AS name, format_type(atttypid, atttypmod) AS type, NOT attnotnull AS nullable
FROM pg_attribute
WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped
ORDER BY attnum
"""
PRIMARY_KEY = """
SELECT array_agg(a.attname ORDER BY a.attnum)
FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = $1::regclass AND i.indisprimary
"""


@pytest.mark.parametrize("projection", ALL, ids=lambda p: p.name)
async def test_the_row_definition_is_the_migrated_table(
    db: asyncpg.Connection, projection: Projection[object, object]
) -> None:
    table = projection.definition
    migrated = [tuple(row.values()) for row in await db.fetch(COLUMNS, table.name)]
    defined = [(c.name, c.type, c.nullable) for c in table.columns]
    assert defined == migrated
    assert await db.fetchval(PRIMARY_KEY, table.name) == list(table.key)


@pytest.mark.parametrize("projection", ALL, ids=lambda p: p.name)
async def test_the_derived_statements_run(
    db: asyncpg.Connection, projection: Projection[object, object]
) -> None:
    """Preparing checks every name and cast of the statements against the real tables."""
    await db.prepare(projection.upsert_sql)
    if projection.load_sql is not None:
        await db.prepare(projection.load_sql)
