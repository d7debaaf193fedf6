"""Where a benchmark run lives: its own databases and AMQP prefixes, all removed afterwards.

A full run uses `deskledger_bench` (a migrated template) and `deskledger_bench_<part>` copies of
it, so a run left half-done by a crash is cleaned up by the next one; a smoke run adds a random
suffix so that it can run beside another test session.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
import asyncpg

from shared.broker import delete_topology
from shared.db import migrate
from shared.settings import SETTINGS, Settings, load_settings
from tests.benchmarks.corpus import SECRET
from tests.helpers.services import ServiceUrls, service_urls

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build" / "bench"
# Session advisory lock held by a full run from start to clean-up ("deskledger.bench", hashed).
RUN_LOCK_KEY = 7_204_611_833_092_009


@dataclass
class Bench:
    smoke: bool
    urls: ServiceUrls
    name: str  # database name of the template; prefix of everything else
    logs: Path
    databases: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    # What a webhook costs, by where it was measured (`tests.benchmarks.cost`).
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def database(self, label: str) -> str:
        """A fresh, migrated database for one measurement; its URL."""
        name = f"{self.name}_{label}"
        admin = await asyncpg.connect(self.urls.database("postgres"))
        try:
            await _drop(admin, name)
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.name}"')
        finally:
            await admin.close()
        self.databases.append(name)
        return self.urls.database(name)

    async def prefix(self, label: str) -> str:
        """An AMQP prefix of its own, whose queues start empty (a crashed run's are deleted)."""
        prefix = f"{self.name.replace('_', '-')}-{label}"
        await self.drop_topology(prefix)
        self.prefixes.append(prefix)
        return prefix

    def settings(self, database_url: str, prefix: str, **changes: object) -> Settings:
        base = load_settings(environ={}, dotenv=None)
        return base.replace(
            database_url=database_url,
            amqp_url=self.urls.amqp,
            amqp_prefix=prefix,
            secrets=(SECRET,),
            source_timezone=ZoneInfo("Europe/Moscow"),
            log_format="json",
            http_host="127.0.0.1",
            worker_metrics_port=0,
            drain_seconds=0.0,
            **changes,
        )

    def log_path(self, label: str) -> Path:
        return self.logs / f"{label}.log"

    async def drop_topology(self, prefix: str) -> None:
        connection = await aio_pika.connect(self.urls.amqp, timeout=10)
        async with connection:
            await delete_topology(await connection.channel(), prefix)
        if prefix in self.prefixes:
            self.prefixes.remove(prefix)


def environ(settings: Settings, **extra: str) -> dict[str, str]:
    """The process environment that makes a `deskledger` subprocess load `settings`."""
    env = dict(os.environ)
    for setting in SETTINGS:
        value = getattr(settings, setting.field)
        if value is None:
            text = ""
        elif isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, tuple):
            text = ",".join(value)
        elif isinstance(value, ZoneInfo):
            text = value.key
        else:
            text = str(value)
        env[setting.env] = text
    env.update(extra)
    return env


async def _drop(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def bench_environment(smoke: bool) -> AsyncIterator[Bench]:
    name = f"deskledger_bench_smoke_{uuid.uuid4().hex[:8]}" if smoke else "deskledger_bench"
    logs = BUILD / ("smoke-logs" if smoke else "logs")
    logs.mkdir(parents=True, exist_ok=True)
    with service_urls() as urls:
        admin = await asyncpg.connect(urls.database("postgres"))
        try:
            if not smoke:
                await _one_full_run_at_a_time(admin)
                await _drop_leftovers(admin, name)
            await migrate(urls.database(name))
            bench = Bench(smoke=smoke, urls=urls, name=name, logs=logs)
            try:
                yield bench
            finally:
                await _clean(bench)
        finally:
            await admin.close()  # releases the run lock


async def _one_full_run_at_a_time(admin: asyncpg.Connection) -> None:
    """Full runs share database and queue names, and would skew each other's numbers."""
    if not await admin.fetchval("SELECT pg_try_advisory_lock($1)", RUN_LOCK_KEY):
        print("[bench] another full benchmark run is in progress; waiting for it", flush=True)
        await admin.execute("SELECT pg_advisory_lock($1)", RUN_LOCK_KEY)


async def _drop_leftovers(admin: asyncpg.Connection, name: str) -> None:
    """What a crashed full run left (never a smoke run's: one may be running now)."""
    rows = await admin.fetch(
        "SELECT datname FROM pg_database"
        " WHERE datname = $1 OR (datname LIKE $2 AND datname NOT LIKE $3)",
        name,
        name + "\\_%",
        name + "\\_smoke\\_%",
    )
    for row in rows:
        await _drop(admin, row["datname"])


async def _clean(bench: Bench) -> None:
    """Best effort: a broker or database that is down now must not hide the run's outcome."""
    for prefix in list(bench.prefixes):
        with contextlib.suppress(Exception):
            await bench.drop_topology(prefix)
    try:
        admin = await asyncpg.connect(bench.urls.database("postgres"))
        try:
            for name in [*bench.databases, bench.name]:
                await _drop(admin, name)
        finally:
            await admin.close()
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"[bench] could not drop {bench.name}*: {exc!r}", flush=True)
    if bench.prefixes:
        print(f"[bench] could not delete AMQP prefixes {bench.prefixes}", flush=True)
