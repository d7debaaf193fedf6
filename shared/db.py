"""PostgreSQL plumbing: connection helpers and the migration runner.

Migrations are numbered plain-SQL files in `shared/migrations/`, applied in order, each in its own
transaction, recorded with a checksum in `schema_migrations`. A session advisory lock on a
dedicated connection (not a pool connection: releasing one drops session locks) makes concurrent
`migrate` runs safe: the second waits, then finds nothing to do.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog
from asyncpg.exceptions._base import DataError as _ClientDataError
from asyncpg.pool import PoolConnectionProxy

from shared.errors import MigrationError

log = structlog.get_logger()

# A connection of its own or one borrowed from a pool: the code that runs SQL takes either.
Conn = asyncpg.Connection | PoolConnectionProxy

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# pg_advisory_lock key of `migrate`: the text "deskledger.migrate" hashed once, kept constant.
MIGRATE_LOCK_KEY = 7_204_611_833_092_001

CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schema_migrations_pkey PRIMARY KEY (name)
)
"""
SELECT_APPLIED = "SELECT name, checksum FROM schema_migrations ORDER BY name"
INSERT_APPLIED = "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)"


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    files = sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    return [Migration(name=f.name, sql=f.read_text(encoding="utf-8")) for f in files]


def database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if not name:
        raise MigrationError(f"DATABASE_URL names no database: {url!r}")
    return name


def _maintenance_url(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


async def ensure_database(url: str) -> bool:
    """Create the database named by `url` when it is missing; True when it was created."""
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    name = database_name(url)
    admin = await asyncpg.connect(_maintenance_url(url))
    try:
        quoted = await admin.fetchval("SELECT quote_ident($1)", name)
        await admin.execute(f"CREATE DATABASE {quoted}")
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        # Another migrate created it a moment ago (concurrent CREATE DATABASE can also surface
        # as a unique violation on pg_database).
        return False
    finally:
        await admin.close()
    log.info("database_created", database=name)
    return True


async def migrate(url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the pending migrations; returns the names applied (empty when up to date)."""
    await ensure_database(url)
    migrations = load_migrations(directory)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATE_LOCK_KEY)
        try:
            return await _apply_pending(conn, migrations)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK_KEY)
    finally:
        await conn.close()


async def _apply_pending(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    await conn.execute(CREATE_SCHEMA_MIGRATIONS)
    applied = {row["name"]: row["checksum"] for row in await conn.fetch(SELECT_APPLIED)}
    known = {m.name for m in migrations}
    for name in sorted(set(applied) - known):
        log.warning("migration_unknown", migration=name, hint="applied by a newer DeskLedger?")
    done: list[str] = []
    for migration in migrations:
        if migration.name in applied:
            if applied[migration.name] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.name} was changed after it was applied "
                    "(checksum differs); restore the file and add a new migration instead"
                )
            continue
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(INSERT_APPLIED, migration.name, migration.checksum)
        log.info("migration_applied", migration=migration.name)
        done.append(migration.name)
    return done


# SQLSTATE classes that say "try again later", not "this message is bad": connection exceptions,
# transaction rollbacks (serialization failure, deadlock), insufficient resources, operator
# intervention (admin shutdown, cannot connect now), system errors.
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")


# SQLSTATEs that say "this code expects another schema": undefined table (42P01) or column
# (42703). A worker started before `migrate` ran is a deployment state, not a bad message:
# treated like an outage, it waits for the schema instead of dead-lettering good messages.
_SCHEMA_BEHIND = ("42P01", "42703")


def schema_behind(exc: BaseException) -> bool:
    """True when the database lacks a table or column the code uses: `migrate` has not run."""
    return isinstance(exc, asyncpg.PostgresError) and getattr(exc, "sqlstate", "") in _SCHEMA_BEHIND


def is_transient(exc: BaseException) -> bool:
    """True when a database failure is the infrastructure's, not the data's (I6), or the
    deployment's (a schema behind the code)."""
    if refused_by_store(exc):
        return False
    if schema_behind(exc):
        return True
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    if isinstance(exc, asyncpg.InvalidCachedStatementError):
        return True  # a table swapped by `replay` under a cached statement
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", "") or ""
        return sqlstate[:2] in _TRANSIENT_CLASSES
    return False


# SQLSTATE classes that say "this value or row is bad": data exceptions (a number out of
# range, a NUL in text, an invalid encoding) and integrity constraint violations.
_REFUSED_CLASSES = ("22", "23")


def refused_by_store(exc: BaseException) -> bool:
    """True when PostgreSQL, or asyncpg while encoding for it, refused the data itself.

    asyncpg raises its client-side `DataError` (an `InterfaceError`, so not transient) for a
    value its codec cannot encode, such as an integer wider than an `integer` column; the
    server raises class 22 or 23. Retrying such a batch as it is can never succeed.
    """
    if isinstance(exc, _ClientDataError | UnicodeError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        return (getattr(exc, "sqlstate", "") or "")[:2] in _REFUSED_CLASSES
    return False
