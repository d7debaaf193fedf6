"""The ingress's link to RabbitMQ: one robust connection, one confirming channel.

`publish` returns only when the broker confirmed a persistent message routed to the durable
queue (I1). aio-pika's defaults are unsafe for that: an unroutable publish "succeeds" unless the
channel raises on returns, and a publish on a robust connection waits for the reconnect with no
deadline. Every failure becomes `PublishFailed`, which the handler answers with 503.

aio-pika manages the connection, the channel and the topology; the publish itself goes to the
channel's aiormq layer with `wait=False`. `Exchange.publish` holds the channel's lock until the
event loop has written the frame, which serialises publishes at two loop iterations each: cheap in
a bare publish loop, but an HTTP server's iterations are long, and throughput fell as concurrency
rose. Confirms are still awaited one by one, so publishes stay pipelined and none is promised early.

A publish that timed out stays queued for the socket and unconfirmed; while the broker blocks
publishers (a memory or disk alarm) such leftovers would pile up without end. At most
`max_in_flight` publishes may wait for a confirm at once; beyond that the answer is 503 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import cast

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
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
        exchange: str,
    ) -> None:
        self._settings = settings
        self._timeout = settings.publish_timeout
        self._max_unconfirmed = settings.max_in_flight
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

    async def publish(self, body: bytes, properties: aiormq.spec.Basic.Properties) -> None:
        """Return once the broker confirmed the message; `PublishFailed` otherwise.

        `properties.message_id` must be unique: aiormq matches a returned message by it.
        """
        if self._channel.is_closed:
            self._reopen_soon()
            raise PublishFailed("the broker channel is closed")
        try:
            # One deadline for everything: the robust channel's wait for a reconnect, the socket
            # and the confirm.
            async with asyncio.timeout(self._timeout):
                await self._send(body, properties)
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

    async def _send(self, body: bytes, properties: aiormq.spec.Basic.Properties) -> None:
        # The concrete channel: `wait` is not part of aiormq's abstract interface.
        channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
        if len(channel.confirmations) >= self._max_unconfirmed:
            raise PublishFailed("too many publishes wait for the broker's confirm")
        await channel.basic_publish(
            body,
            exchange=self._exchange,
            routing_key=ROUTING_KEY,
            properties=properties,
            mandatory=True,
            wait=False,
        )

    def revive(self) -> None:
        """Reopen the channel if it is closed for good (see `_reopen_soon`); for callers that
        do not publish while the link looks down (the spool's forwarder)."""
        if self._channel.is_closed:
            self._reopen_soon()

    def _reopen_soon(self) -> None:
        """Open a fresh channel in the background while the connection is up.

        The robust channel restores itself after a reconnect, but not always after a
        channel-level error (a declare that fails on restore leaves it closed for good).
        """
        if self._reopening is not None or not self._connection.connected.is_set():
            return
        # A fresh context: the request that noticed the closed channel is not the reopen's.
        self._reopening = asyncio.create_task(self._reopen(), context=contextvars.Context())

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
) -> tuple[AbstractChannel, str]:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    topology = await declare_topology(channel, settings.amqp_prefix, settings.delivery_limit)
    return channel, topology.names.exchange
