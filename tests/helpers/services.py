"""Where the tests find PostgreSQL and RabbitMQ.

`DATABASE_URL` / `AMQP_URL` (defaults: the local services). When those do not answer and a Docker
engine does, testcontainers starts both for the session.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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


def settings_env(settings: Any) -> dict[str, str]:
    """The environment that makes a `deskledger` subprocess use these Settings."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": settings.database_url,
        "AMQP_URL": settings.amqp_url,
        "DESKLEDGER_AMQP_PREFIX": settings.amqp_prefix,
        "DESKLEDGER_SECRETS": ",".join(settings.secrets),
        "DESKLEDGER_SOURCE_TIMEZONE": str(settings.source_timezone),
        "DESKLEDGER_LOG_FORMAT": "json",
        "DESKLEDGER_HTTP_HOST": settings.http_host,
        "DESKLEDGER_HTTP_PORT": str(settings.http_port or 8080),
        "DESKLEDGER_WORKER_METRICS_PORT": str(settings.worker_metrics_port),
        "DESKLEDGER_BATCH_MS": str(settings.batch_ms),
        "DESKLEDGER_BATCH_SIZE": str(settings.batch_size),
        "DESKLEDGER_DRAIN_SECONDS": str(settings.drain_seconds),
        "DESKLEDGER_PUBLISH_TIMEOUT": str(settings.publish_timeout),
    }
