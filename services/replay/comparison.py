"""Comparing a rebuilt projection table with its live twin, row for row, by primary key.

One pass first: a FULL OUTER JOIN on the key that counts the rows on each side and the rows that
differ. Rows are compared with `*=` (binary image equality, what REFRESH MATERIALIZED VIEW
CONCURRENTLY uses), so "equal" means byte-identical values, at no cost of conversion to text. A
separate checksum pass would scan both tables as well and still need this join when the sums
differ, so this join is the checksum. Only when it finds differences does a second pass list
their keys (bounded), each `missing` (the events call for a row the live table lacks),
`unexpected` (a live row that no event calls for) or `changed`.

Both sides must be read in one snapshot in which the rebuilt table reflects exactly the events
the live one does; `rebuild` arranges that. The statements are built server-side from the
catalog (`format('%I')`), from the table's primary key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import structlog

from shared.db import Conn
from shared.errors import DeskLedgerError

log = structlog.get_logger()

Kind = Literal["missing", "unexpected", "changed"]
KINDS: tuple[Kind, ...] = ("missing", "unexpected", "changed")

# $1 live schema, $2 table, $3 rebuild schema. `k` is the first key column (NOT NULL, being in
# the primary key): NULL on one side of the join means the row is absent there.
STATEMENTS = """
WITH key AS (
    SELECT
        string_agg(format('l.%1$I = r.%1$I', a.attname), ' AND ' ORDER BY k.n) AS join_on,
        string_agg(format('coalesce(l.%1$I, r.%1$I)::text', a.attname), ' || '','' || '
            ORDER BY k.n) AS key_text,
        string_agg(format('coalesce(l.%1$I, r.%1$I)', a.attname), ', ' ORDER BY k.n) AS key_order,
        (array_agg(a.attname ORDER BY k.n))[1] AS k
    FROM pg_index AS i
    CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k (attnum, n)
    JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = format('%I.%I', $1::text, $2::text)::regclass AND i.indisprimary
),
parts AS (
    SELECT
        key.*,
        format('%I.%I AS l FULL JOIN %I.%I AS r ON %s', $1::text, $2::text, $3::text, $2::text,
            join_on) AS source,
        format('l.%1$I IS NULL OR r.%1$I IS NULL OR NOT (l.* *= r.*)', k) AS differs
    FROM key
    WHERE k IS NOT NULL
)
SELECT
    format(
        'SELECT count(l.%1$I) AS live_rows, count(r.%1$I) AS rebuilt_rows, '
        'count(*) FILTER (WHERE l.%1$I IS NULL) AS missing, '
        'count(*) FILTER (WHERE r.%1$I IS NULL) AS unexpected, '
        'count(*) FILTER (WHERE NOT (l.* *= r.*)) AS changed FROM %2$s',
        k, source
    ) AS counting,
    format(
        'SELECT %1$s AS key, CASE WHEN l.%2$I IS NULL THEN ''missing'' '
        'WHEN r.%2$I IS NULL THEN ''unexpected'' ELSE ''changed'' END AS kind '
        'FROM %3$s WHERE %4$s ORDER BY %5$s LIMIT $1',
        key_text, k, source, differs, key_order
    ) AS listing
FROM parts
"""


class ComparisonError(DeskLedgerError):
    """A table cannot be compared (it has no primary key to match rows by)."""


@dataclass
class TableComparison:
    table: str
    live_rows: int = 0
    rebuilt_rows: int = 0
    counts: dict[Kind, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    # Up to the listing limit, in key order: (key as text, kind).
    keys: list[tuple[str, Kind]] = field(default_factory=list)

    @property
    def differing(self) -> int:
        return sum(self.counts.values())


async def compare(
    conn: Conn, live: str, rebuilt: str, table: str, limit: int = 1000
) -> TableComparison:
    """Counts and differing keys of `rebuilt.table` against `live.table` in the current snapshot."""
    statements = await conn.fetchrow(STATEMENTS, live, table, rebuilt)
    if statements is None:
        raise ComparisonError(f"{live}.{table} has no primary key to compare rows by")
    row = await conn.fetchrow(statements["counting"])
    assert row is not None
    counts: dict[Kind, int] = {kind: row[kind] for kind in KINDS}
    result = TableComparison(table, row["live_rows"], row["rebuilt_rows"], counts)
    if result.differing:
        rows = await conn.fetch(statements["listing"], limit)
        result.keys = [(row["key"], row["kind"]) for row in rows]
    return result


def log_comparisons(comparisons: Sequence[TableComparison], position: int) -> None:
    """One line per table, one warning per listed differing key."""
    for c in comparisons:
        log.info(
            "projection_compared",
            table=c.table,
            position=position,
            live_rows=c.live_rows,
            rebuilt_rows=c.rebuilt_rows,
            **c.counts,
        )
        for key, kind in c.keys:
            log.warning("projection_difference", table=c.table, key=key, kind=kind)
        if c.differing > len(c.keys):
            unlisted = c.differing - len(c.keys)
            log.warning("projection_differences_not_listed", table=c.table, count=unlisted)
