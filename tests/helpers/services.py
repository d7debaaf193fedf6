"""Where the tests find PostgreSQL and RabbitMQ, and how they start `deskledger` subprocesses.

`DATABASE_URL` / `AMQP_URL` (defaults: the local services). When those do not answer and a Docker
engine does, testcontainers starts both for the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import asyncpg

from shared.settings import SETTINGS, Settings

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATABASE_URL = "postgresql://127.0.0.1:5432/postgres"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass(frozen=True)
class ServiceUrls:
    postgres: str  # a server URL; the database part is replaced per test
    amqp: str

    def database(self, name: str) -> str:
        return urlunsplit(urlsplit(self.postgres)._replace(path=f"/{name}"))


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def _docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def service_urls() -> Iterator[ServiceUrls]:
    postgres = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    amqp = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    if _answers(postgres, 5432) and _answers(amqp, 5672):
        yield ServiceUrls(postgres=postgres, amqp=amqp)
        return
    if not _docker_available():
        raise RuntimeError(
            f"PostgreSQL ({postgres}) or RabbitMQ ({amqp}) does not answer and no Docker engine "
            "is available: start them (see README) or set DATABASE_URL / AMQP_URL"
        )
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer

    with (
        PostgresContainer("postgres:16", driver=None) as pg,
        RabbitMqContainer("rabbitmq:3.13-management") as mq,
    ):
        pg_url = pg.get_connection_url()
        amqp_url = f"amqp://guest:guest@{mq.get_container_host_ip()}:{mq.get_exposed_port(5672)}/"
        yield ServiceUrls(postgres=pg_url, amqp=amqp_url)


def settings_environ(settings: Settings) -> dict[str, str]:
    """Environment variables that `load_settings` turns back into `settings`."""
    return {s.env: _env_value(getattr(settings, s.field)) for s in SETTINGS}


def _env_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, ZoneInfo):
        return value.key
    return str(value)


async def deskledger(
    settings: Settings,
    *args: str,
    extra_env: dict[str, str] | None = None,
    stdout: Any = asyncio.subprocess.PIPE,
    stderr: Any = asyncio.subprocess.PIPE,
) -> asyncio.subprocess.Process:
    """`python -m services ARGS` (the real CLI) in the repository, configured by `settings`."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services",
        *args,
        env={**os.environ, **settings_environ(settings), **(extra_env or {})},
        cwd=REPO,
        stdout=stdout,
        stderr=stderr,
    )


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _admin(services: ServiceUrls, statement: str) -> None:
    # A fresh connection each time: a fault test may have restarted PostgreSQL in between.
    admin = await asyncpg.connect(services.database("postgres"))
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def database_from_template(
    services: ServiceUrls, template: str, prefix: str = "dl_test"
) -> AsyncIterator[str]:
    """A database of its own, `CREATE DATABASE ... TEMPLATE` (milliseconds), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await _admin(services, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield services.database(name)
    finally:
        await _admin(services, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
