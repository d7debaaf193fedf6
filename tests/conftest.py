"""Shared fixtures: real PostgreSQL and RabbitMQ, isolated per test.

- a template database with every migration applied, built once per session;
- `database_url`: a fresh database per test, `CREATE DATABASE ... TEMPLATE` (milliseconds);
- `amqp_prefix`: a random prefix per test; its queues and exchanges are deleted afterwards;
- `settings`: a Settings object pointing at both.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from zoneinfo import ZoneInfo

import aio_pika
import asyncpg
import pytest

from shared.broker import delete_topology
from shared.db import migrate
from shared.settings import Settings, load_settings
from tests.helpers.secret import TEST_SECRET
from tests.helpers.services import ServiceUrls, database_from_template, service_urls


@pytest.fixture(scope="session")
def services() -> Iterator[ServiceUrls]:
    with service_urls() as urls:
        yield urls


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        quoted = await conn.fetchval("SELECT quote_ident($1)", name)
        await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_database(services: ServiceUrls) -> Iterator[str]:
    name = f"dl_template_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(migrate(services.database(name)))
    yield name
    asyncio.run(_drop_database(services.database("postgres"), name))


@pytest.fixture
async def fresh_url(services: ServiceUrls) -> AsyncIterator[str]:
    """A database name that does not exist yet (for migrations from nothing); dropped after."""
    name = f"dl_fresh_{uuid.uuid4().hex[:10]}"
    yield services.database(name)
    await _drop_database(services.database("postgres"), name)


@pytest.fixture
async def database_url(services: ServiceUrls, template_database: str) -> AsyncIterator[str]:
    async with database_from_template(services, template_database) as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def amqp_prefix(services: ServiceUrls) -> AsyncIterator[str]:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield prefix
    try:
        connection = await aio_pika.connect(services.amqp, timeout=10)
    except Exception:
        return
    async with connection:
        await delete_topology(await connection.channel(), prefix)


@pytest.fixture
def settings(database_url: str, amqp_prefix: str, services: ServiceUrls) -> Settings:
    base = load_settings(environ={}, dotenv=None)
    return base.replace(
        database_url=database_url,
        amqp_url=services.amqp,
        amqp_prefix=amqp_prefix,
        secrets=(TEST_SECRET,),
        source_timezone=ZoneInfo("Europe/Moscow"),
        log_format="json",
        http_host="127.0.0.1",
        http_port=8080,  # valid for subprocesses; in-process servers bind their own port
        worker_metrics_port=0,
        drain_seconds=0.0,
        batch_ms=10,
    )
