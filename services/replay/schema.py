"""The rebuild schema: fresh projection tables beside the live ones, and the swap moving them in.

Identifiers: table names come only from the projection registry, the schema names are constants,
and every identifier in DDL is quoted by PostgreSQL itself: a `SELECT format('... %I ...')` builds
the statement server-side, and we run the text it returns. Nothing from input reaches DDL.

A fresh table is `LIKE` its live twin (columns, defaults, checks, storage, statistics), with its
storage parameters, without indexes: filling an unindexed table and then building each index
once costs much less than maintaining indexes row by row. The indexes and constraints are then
recreated under the live tables' own names, and the owner and grants are copied, so that after
the swap the schema is exactly what the migrations made (a later migration naming an index still
finds it) and readers keep their access. Triggers, policies and publications are not carried
over; the projection tables have none.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared.db import Conn
from shared.errors import DeskLedgerError

REBUILD_SCHEMA = "deskledger_rebuild"


class SchemaError(DeskLedgerError):
    """The live projection tables cannot be copied or swapped; the message says which and why."""


LIVE_SCHEMA = "SELECT current_schema()"
MISSING_TABLES = """
SELECT t
FROM unnest($2::text[]) AS t
WHERE to_regclass(format('%I.%I', $1::text, t)) IS NULL
"""

DROP_SCHEMA = "SELECT format('DROP SCHEMA IF EXISTS %I CASCADE', $1::text)"
CREATE_SCHEMA = "SELECT format('CREATE SCHEMA %I', $1::text)"
CREATE_TABLE = """
SELECT format(
    'CREATE TABLE %I.%I (LIKE %I.%I INCLUDING ALL EXCLUDING INDEXES)',
    $3::text, $2::text, $1::text, $2::text
)
"""
# Storage parameters (e.g. the tickets' toast_tuple_target): LIKE does not copy them.
STORAGE_PARAMETERS = """
SELECT format('ALTER TABLE %I.%I SET (%s)', $3::text, $2::text, array_to_string(c.reloptions, ', '))
FROM pg_class AS c
WHERE c.oid = format('%I.%I', $1::text, $2::text)::regclass
  AND c.reloptions IS NOT NULL
"""
# Owner first (changing it resets nothing we granted), then one GRANT per ACL entry.
OWNER_AND_GRANTS = """
SELECT statement
FROM (
    SELECT
        0 AS step,
        format('ALTER TABLE %I.%I OWNER TO %I', $3::text, $2::text, pg_get_userbyid(c.relowner))
            AS statement
    FROM pg_class AS c
    WHERE c.oid = format('%I.%I', $1::text, $2::text)::regclass
      AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
    UNION ALL
    SELECT
        1,
        format(
            'GRANT %s ON %I.%I TO %s%s',
            a.privilege_type,
            $3::text,
            $2::text,
            CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
            CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END
        )
    FROM pg_class AS c, aclexplode(c.relacl) AS a
    WHERE c.oid = format('%I.%I', $1::text, $2::text)::regclass
      AND a.grantee <> c.relowner
) AS steps
ORDER BY step
"""
# One statement per live index: constraints (primary key, unique, exclusion) re-added by their
# definition; plain indexes re-created from pg_get_indexdef, whose text after `USING ` (method,
# columns, INCLUDE, WITH, WHERE) is kept and whose table is replaced. NULL when the definition
# does not start as expected, so we refuse rather than guess.
INDEXES = """
SELECT
    ix.relname AS name,
    CASE
        WHEN con.oid IS NOT NULL THEN format(
            'ALTER TABLE %I.%I ADD CONSTRAINT %I %s',
            $3::text, $2::text, con.conname, pg_get_constraintdef(con.oid)
        )
        WHEN left(d.def, length(d.prefix)) = d.prefix THEN format(
            'CREATE %sINDEX %I ON %I.%I USING %s',
            d.uniq, ix.relname, $3::text, $2::text, substr(d.def, length(d.prefix) + 1)
        )
    END AS statement
FROM pg_index AS i
JOIN pg_class AS ix ON ix.oid = i.indexrelid
LEFT JOIN pg_constraint AS con
    ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x')
CROSS JOIN LATERAL (
    SELECT
        pg_get_indexdef(i.indexrelid) AS def,
        CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END AS uniq
) AS u
CROSS JOIN LATERAL (
    SELECT
        u.def,
        u.uniq,
        format('CREATE %sINDEX %I ON %I.%I USING ', u.uniq, ix.relname, $1::text, $2::text)
            AS prefix
) AS d
WHERE i.indrelid = format('%I.%I', $1::text, $2::text)::regclass
ORDER BY con.oid IS NULL, ix.relname
"""
ANALYZE = "SELECT format('ANALYZE %I.%I', $1::text, $2::text)"
# The rebuild tables first; `events` and everything else from the live schema.
SEARCH_PATH = "SELECT set_config('search_path', format('%I, %I', $1::text, $2::text), true)"

LOCK_LIVE = """
SELECT format(
    'LOCK TABLE %s IN ACCESS EXCLUSIVE MODE',
    string_agg(format('%I.%I', $1::text, t), ', ' ORDER BY t)
)
FROM unnest($2::text[]) AS t
"""
# RESTRICT (the default): a view on a live table makes the swap fail, it is not dropped silently.
DROP_TABLE = "SELECT format('DROP TABLE %I.%I', $1::text, $2::text)"
MOVE_TABLE = "SELECT format('ALTER TABLE %I.%I SET SCHEMA %I', $2::text, $3::text, $1::text)"
DROP_EMPTY_SCHEMA = "SELECT format('DROP SCHEMA %I', $1::text)"


async def _run_built(conn: Conn, builder: str, *args: object) -> None:
    """Run each statement that `builder` (a SELECT of `format(...)`) returns."""
    for row in await conn.fetch(builder, *args):
        await conn.execute(row[-1])


async def live_schema(conn: Conn, tables: Sequence[str]) -> str:
    """The schema the workers write (the first of their search_path); all `tables` must exist."""
    schema: str = await conn.fetchval(LIVE_SCHEMA)
    missing = [row[0] for row in await conn.fetch(MISSING_TABLES, schema, list(tables))]
    if missing:
        raise SchemaError(
            f"projection table(s) {', '.join(missing)} missing in schema {schema}: "
            "run `deskledger migrate` first"
        )
    return schema


async def drop_rebuild(conn: Conn) -> None:
    """Remove what an earlier, interrupted replay left behind (nothing live is in it)."""
    await _run_built(conn, DROP_SCHEMA, REBUILD_SCHEMA)


async def create_rebuild(conn: Conn, live: str, tables: Sequence[str]) -> None:
    """A fresh, empty schema holding an unindexed copy of each table's definition."""
    await drop_rebuild(conn)
    await _run_built(conn, CREATE_SCHEMA, REBUILD_SCHEMA)
    for table in tables:
        await _run_built(conn, CREATE_TABLE, live, table, REBUILD_SCHEMA)
        await _run_built(conn, STORAGE_PARAMETERS, live, table, REBUILD_SCHEMA)
        await _run_built(conn, OWNER_AND_GRANTS, live, table, REBUILD_SCHEMA)


async def finish_tables(conn: Conn, live: str, table: str) -> None:
    """After the bulk load: the live table's indexes under their live names, then statistics."""
    for row in await conn.fetch(INDEXES, live, table, REBUILD_SCHEMA):
        if row["statement"] is None:
            raise SchemaError(
                f"cannot copy index {row['name']} of {live}.{table}: unexpected definition; "
                "nothing was swapped"
            )
        try:
            await conn.execute(row["statement"])
        except asyncpg.UniqueViolationError as exc:
            raise SchemaError(
                f"the rebuilt {table} breaks its index {row['name']}: {exc.detail}; a projection "
                "key that belongs to more than one ticket cannot be folded ticket by ticket; "
                "nothing was swapped"
            ) from exc
    await _run_built(conn, ANALYZE, REBUILD_SCHEMA, table)


async def use_rebuild(conn: Conn, live: str) -> None:
    """Point the unqualified projection SQL at the rebuild tables until the transaction ends."""
    await conn.execute(SEARCH_PATH, REBUILD_SCHEMA, live)


async def lock_live(conn: Conn, live: str, tables: Sequence[str]) -> None:
    await _run_built(conn, LOCK_LIVE, live, list(tables))


async def swap(conn: Conn, live: str, tables: Sequence[str]) -> None:
    """Inside the caller's transaction: drop each live table, move its rebuilt twin in."""
    for table in tables:
        await _run_built(conn, DROP_TABLE, live, table)
        await _run_built(conn, MOVE_TABLE, live, REBUILD_SCHEMA, table)
    await _run_built(conn, DROP_EMPTY_SCHEMA, REBUILD_SCHEMA)
