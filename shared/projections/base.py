"""What a projection is, and the one way it is applied, live or in a replay.

Each projection table has one definition, a `NamedTuple` row type whose fields are its columns
in order, each annotated with its PostgreSQL type (`Bigint`, `Text | None`, ...). The column
list, the UPSERT, the load query and the COPY of the replay are all derived from it
(`Table.of`), and a test holds every definition against the migrated schema. Building those
statements from the definitions (module constants, never input) is the one place identifiers
are formatted into SQL.

A projection is a keyed fold: `key(event)` says which row an event speaks about (None: not this
projection's business), `fold(state, event) -> state` folds one stored event into that row's
state, and `row(state)` is the table row. The live worker loads the states of the keys a batch
touches, folds the batch's new events and upserts the rows: one SELECT and one INSERT per table
per batch. The replay folds the whole store with the same functions into fresh tables.

Folds must not depend on the order events arrive in (I5): each value is set by the newest event
that speaks about it, newest by `stamp()` (UseDesk's time, then kind, then UseDesk's id).
A fold owns the state it is given and may return it changed; callers never share states.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import (
    Annotated,
    Any,
    Generic,
    Literal,
    NamedTuple,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import asyncpg

from shared.db import Conn
from shared.events import Event
from shared.eventstore import StoredEvent

K = TypeVar("K")
S = TypeVar("S")

# Creation before changes in the same second, then comments, then ratings.
KIND_RANK = {"ticket_created": 0, "ticket_changed": 1, "comment_created": 2, "rating": 3}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class PgType:
    """A column's PostgreSQL type, as the migrations spell it (`format_type`)."""

    name: str


Bigint = Annotated[int, PgType("bigint")]
Integer = Annotated[int, PgType("integer")]
Text = Annotated[str, PgType("text")]
Timestamptz = Annotated[datetime, PgType("timestamp with time zone")]
Boolean = Annotated[bool, PgType("boolean")]
# jsonb written as JSON text, bytea as bytes.
Jsonb = Annotated[str, PgType("jsonb")]
Bytea = Annotated[bytes, PgType("bytea")]


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool


@dataclass(frozen=True)
class Table:
    """A projection table: its columns and the statements derived from them."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # the primary key's columns
    upsert_sql: str

    @classmethod
    def of(
        cls,
        name: str,
        row_type: type[NamedTuple],
        key: str | tuple[str, ...],
        on_conflict: Literal["replace", "keep"],
        keep_equal: tuple[str, ...] = (),
    ) -> Table:
        """The table `name` whose rows are `row_type`, unique on `key`; a row whose key is stored
        already replaces the stored one, or is skipped (`keep`: rows that never change).

        `keep_equal`: columns whose stored value a replacing row keeps when the new one is equal.
        For a value stored out of line (TOAST) the new row version then points at the same
        chunks instead of writing them again (issue 18: `tickets.custom_fields`)."""
        columns = tuple(_column(field, hint) for field, hint in _hints(row_type))
        keys = (key,) if isinstance(key, str) else key
        return cls(name, columns, keys, _upsert(name, columns, keys, on_conflict, keep_equal))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def load_sql(self, *names: str) -> str:
        """SELECT `names` (all columns when none) of the rows whose keys are in `$1` (a table
        with a one-column key)."""
        (key,) = self.key
        key_type = next(c.type for c in self.columns if c.name == key)
        listed = ",\n    ".join(names or self.names)
        return f"SELECT\n    {listed}\nFROM {self.name}\nWHERE {key} = ANY($1::{key_type}[])"


def _hints(row_type: type[NamedTuple]) -> list[tuple[str, Any]]:
    hints = get_type_hints(row_type, include_extras=True)
    return [(field, hints[field]) for field in row_type._fields]


def _column(field: str, hint: Any) -> Column:
    """`Bigint` is NOT NULL, `Bigint | None` nullable."""
    members = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    nullable = type(None) in members
    (annotated,) = (m for m in members if m is not type(None))
    (pg_type,) = (m for m in get_args(annotated)[1:] if isinstance(m, PgType))
    return Column(field, pg_type.name, nullable)


# The short names PostgreSQL's casts accept (`$1::timestamptz[]`).
_CAST = {"timestamp with time zone": "timestamptz"}


def _upsert(
    table: str,
    columns: tuple[Column, ...],
    key: tuple[str, ...],
    on_conflict: Literal["replace", "keep"],
    keep_equal: tuple[str, ...] = (),
) -> str:
    """INSERT ... SELECT * FROM unnest($1, ..., $n) ON CONFLICT (key) ...: one array per column.

    Table names are unqualified and conflicts name columns, not constraints: the replay runs the
    same statements against fresh tables of the same names in its own schema.
    """
    names = ",\n    ".join(c.name for c in columns)
    arrays = ", ".join(
        f"${n}::{_CAST.get(c.type, c.type)}[]" for n, c in enumerate(columns, start=1)
    )
    if on_conflict == "keep":
        action = "DO NOTHING"
    else:
        updates = ",\n    ".join(
            _update(table, c.name, c.name in keep_equal) for c in columns if c.name not in key
        )
        action = f"DO UPDATE SET\n    {updates}"
    return (
        f"INSERT INTO {table} (\n    {names}\n)\n"
        f"SELECT * FROM unnest({arrays})\n"
        f"ON CONFLICT ({', '.join(key)}) {action}"
    )


def _update(table: str, column: str, keep_equal: bool) -> str:
    if not keep_equal:
        return f"{column} = EXCLUDED.{column}"
    stored, new = f"{table}.{column}", f"EXCLUDED.{column}"
    return f"{column} = CASE WHEN {stored} = {new} THEN {stored} ELSE {new} END"


def stamp(moment: datetime, kind: str, usedesk_id: int) -> str:
    """A string that sorts like (moment, kind rank, UseDesk id): the version of a value."""
    micros = (moment - _EPOCH) // _MICROSECOND
    return f"{micros:018d}.{KIND_RANK[kind]}.{usedesk_id:020d}"


@dataclass(frozen=True)
class Projection(Generic[K, S]):
    name: str
    definition: Table
    key: Callable[[Event], K | None]
    fold: Callable[[S | None, StoredEvent], S]
    # The row of a state; with `many`, the list of rows of a state (one event, several rows).
    row: Callable[[S], Any]
    many: bool = False
    # SELECT the stored states of `$1` keys; None when rows are only ever inserted.
    load_sql: str | None = None
    load: Callable[[asyncpg.Record], tuple[K, S]] | None = None

    @property
    def table(self) -> str:
        return self.definition.name

    @property
    def columns(self) -> tuple[str, ...]:
        return self.definition.names

    @property
    def upsert_sql(self) -> str:
        return self.definition.upsert_sql


def fold_into(
    projection: Projection[K, S], states: dict[K, S], events: Iterable[StoredEvent]
) -> set[K]:
    """Fold `events` into `states` (in place); returns the keys that changed."""
    touched: set[K] = set()
    for stored in events:
        key = projection.key(stored.event)
        if key is None:
            continue
        states[key] = projection.fold(states.get(key), stored)
        touched.add(key)
    return touched


def rows_of(projection: Projection[K, S], states: Iterable[S]) -> list[tuple[Any, ...]]:
    """The table rows of `states`."""
    if projection.many:
        return [row for state in states for row in projection.row(state)]
    return [projection.row(state) for state in states]


async def apply(
    conn: Conn, projection: Projection[K, S], events: Sequence[StoredEvent]
) -> dict[K, S]:
    """Fold newly appended events into the live table; returns the states of the rows written
    (for the caller's report: what a human should know about, such as a suspected gap)."""
    keys = {k for k in map(projection.key, (s.event for s in events)) if k is not None}
    if not keys:
        return {}
    states: dict[K, S] = {}
    if projection.load_sql is not None and projection.load is not None:
        records = await conn.fetch(projection.load_sql, list(keys))
        states = dict(projection.load(record) for record in records)
    touched = fold_into(projection, states, events)
    written = {key: states[key] for key in sorted(touched)}  # type: ignore[type-var]
    rows = rows_of(projection, written.values())
    await conn.execute(projection.upsert_sql, *(list(column) for column in zip(*rows, strict=True)))
    return written
