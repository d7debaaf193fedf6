"""The ingress's link to RabbitMQ: one robust connection, one confirming channel.

`publish` returns only when the broker confirmed a persistent message routed to the durable
queue (I1). aio-pika's defaults are unsafe for that: an unroutable publish "succeeds" unless the
channel raises on returns, and a publish on a robust connection waits for the reconnect with no
deadline. Every failure becomes `PublishFailed`, which the handler answers with 503.
"""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from shared.broker import ROUTING_KEY, declare_topology
from shared.errors import DeskLedgerError
from shared.settings import Settings

log = structlog.get_logger()

CONNECT_TIMEOUT_SECONDS = 10.0
# A stopped broker should be noticed back quickly: readiness and 503s depend on it.
RECONNECT_SECONDS = 1.0


class PublishFailed(DeskLedgerError):
    """RabbitMQ did not confirm the message; nothing is promised, the sender should retry."""


class Publisher:
    """Publishes webhooks with confirms; pipelined, many publishes wait on one channel at once."""

    def __init__(
        self,
        settings: Settings,
        connection: AbstractRobustConnection,
        channel: AbstractChannel,
        exchange: AbstractExchange,
    ) -> None:
        self._settings = settings
        self._timeout = settings.publish_timeout
        self._connection = connection
        self._channel = channel
        self._exchange = exchange
        self._reopening: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, settings: Settings) -> Publisher:
        """Connect and declare the topology; raises when the broker cannot be reached."""
        connection = await aio_pika.connect_robust(
            settings.amqp_url,
            timeout=CONNECT_TIMEOUT_SECONDS,
            reconnect_interval=RECONNECT_SECONDS,
            client_properties={"connection_name": "deskledger-ingress"},
        )
        try:
            channel, exchange = await _confirming_channel(connection, settings)
        except BaseException:
            await connection.close()
            raise
        return cls(settings, connection, channel, exchange)

    @property
    def connected(self) -> bool:
        return self._connection.connected.is_set() and not self._channel.is_closed

    async def publish(self, message: aio_pika.Message) -> None:
        """Return once the broker confirmed `message`; `PublishFailed` otherwise."""
        if self._channel.is_closed:
            self._reopen_soon()
            raise PublishFailed("the broker channel is closed")
        try:
            # The outer deadline also covers the robust exchange's wait for a reconnect.
            async with asyncio.timeout(self._timeout):
                await self._exchange.publish(
                    message, ROUTING_KEY, mandatory=True, timeout=self._timeout
                )
        except TimeoutError as exc:
            raise PublishFailed(f"no confirm within {self._timeout:g} s") from exc
        except asyncio.CancelledError as exc:
            # A closing channel cancels the confirms it still waits for; only a cancellation
            # of this task itself (client gone, shutdown) is a real one.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise PublishFailed("the broker channel closed before the confirm") from exc
        except CONNECTION_EXCEPTIONS as exc:
            raise PublishFailed(f"{type(exc).__name__}: {exc}") from exc

    def _reopen_soon(self) -> None:
        """Open a fresh channel in the background while the connection is up.

        The robust channel restores itself after a reconnect, but not always after a
        channel-level error (a declare that fails on restore leaves it closed for good).
        """
        if self._reopening is not None or not self._connection.connected.is_set():
            return
        self._reopening = asyncio.create_task(self._reopen())

    async def _reopen(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                channel, exchange = await _confirming_channel(self._connection, self._settings)
        except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
            log.warning("broker_channel_reopen_failed", error=f"{type(exc).__name__}: {exc}")
            return
        finally:
            self._reopening = None
        old, self._channel, self._exchange = self._channel, channel, exchange
        log.info("broker_channel_reopened")
        with contextlib.suppress(*CONNECTION_EXCEPTIONS):
            await old.close()

    async def close(self) -> None:
        if self._reopening is not None:
            self._reopening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reopening
        with contextlib.suppress(*CONNECTION_EXCEPTIONS):
            await self._connection.close()


async def _confirming_channel(
    connection: AbstractRobustConnection, settings: Settings
) -> tuple[AbstractChannel, AbstractExchange]:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    topology = await declare_topology(channel, settings.amqp_prefix, settings.delivery_limit)
    return channel, topology.exchange
