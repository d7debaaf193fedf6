"""The ingress's link to RabbitMQ: one robust connection, one confirming channel.

`publish` returns only when the broker confirmed a persistent message routed to the durable
queue (I1). aio-pika's defaults are unsafe for that: an unroutable publish "succeeds" unless the
channel raises on returns, and a publish on a robust connection waits for the reconnect with no
deadline. Every failure becomes `PublishFailed`, which the handler answers with 503.

aio-pika manages the connection, the channel and the topology; the publish itself is written to
the channel's aiormq layer directly, in batches (`_Batch`). aiormq's `basic_publish` puts every
message on the connection's write queue on its own, and its writer sends each with a `send`
system call: on loopback that call also runs the broker side's TCP receive, and it was the largest
single cost of a webhook. Here the publishes of one event-loop iteration are marshalled into one
write (the method frame, constant for our exchange and routing key, marshalled once per channel),
with exactly `basic_publish`'s bookkeeping for each message: the next delivery tag, a
confirmation future from the channel's own future store (so a closing channel rejects it), and the
message id that a `Basic.Return` is matched by (so an unroutable message still fails its
confirmation with `PublishError`: mandatory and confirms are as before). Delivery tags follow the
order of the frames because this publisher is the only one on its channel, assigns a tag and
queues the frame without awaiting in between, and writes batches in order. Confirms are awaited
one by one, so publishes stay pipelined and none is promised early.

A publish that timed out stays queued for the socket and unconfirmed; while the broker blocks
publishers (a memory or disk alarm) such leftovers would pile up without end. At most
`max_in_flight` publishes may wait for a confirm at once; beyond that the answer is 503 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import struct
from collections import deque
from typing import cast

import aio_pika
import aiormq
import pamqp.frame
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.abc import ChannelFrame
from pamqp.body import ContentBody
from pamqp.commands import Basic

from shared import envelope
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
        self._batch: _Batch | None = None

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
        await self._publish(body, properties.message_id or "", properties.marshal())

    async def publish_delivery(self, delivery: envelope.Delivery) -> None:
        """`publish` of `delivery` with `envelope.properties(delivery)`, without building them
        (their wire form is written directly: `envelope.encoded_properties`)."""
        encoded = envelope.encoded_properties(delivery)
        if encoded is None:
            encoded = envelope.properties(delivery).marshal()
        await self._publish(delivery.body, str(delivery.delivery_id), encoded)

    async def _publish(self, body: bytes, message_id: str, properties: bytes) -> None:
        if not message_id:
            raise ValueError("a message id is needed to match a returned message")
        if self._channel.is_closed:
            self._reopen_soon()
            raise PublishFailed("the broker channel is closed")
        try:
            # One deadline for everything: the robust channel's wait for a reconnect, the socket
            # and the confirm.
            async with asyncio.timeout(self._timeout):
                await self._send(body, message_id, properties)
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

    async def _send(self, body: bytes, message_id: str, properties: bytes) -> None:
        channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
        if len(channel.confirmations) >= self._max_unconfirmed:
            raise PublishFailed("too many publishes wait for the broker's confirm")
        if channel.is_closed:
            raise PublishFailed("the broker channel is closed")
        batch = self._batch
        if batch is None or batch.channel is not channel or batch.exchange != self._exchange:
            batch = self._batch = _Batch(channel, self._exchange)
        await batch.publish(body, message_id, properties)

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


_HEADER_START = struct.Struct(">BHIHHQ")
_FRAME_END = b"\xce"


class _Batch:
    """Publishes on one aiormq channel, written to its connection once per loop iteration."""

    def __init__(self, channel: aiormq.Channel, exchange: str) -> None:
        self.channel = channel
        self.exchange = exchange
        number = channel.number
        self._number = number
        self._max_content = channel.max_content_size
        self._method = pamqp.frame.marshal(
            Basic.Publish(exchange=exchange, routing_key=ROUTING_KEY, mandatory=True), number
        )
        self._pending: list[bytes] = []
        # Batches the write queue had no room for, in order (it holds 10 frames).
        self._backlog: deque[ChannelFrame] = deque()
        self._putting: asyncio.Task[None] | None = None

    def publish(self, body: bytes, message_id: str, properties: bytes) -> asyncio.Future[object]:
        """Queue one message (`properties`: marshalled); the future is its confirmation (aiormq
        resolves it: the Ack, or `PublishError` when returned, `DeliveryError` when nacked;
        cancelled if the channel closes)."""
        channel = self.channel
        frames = [self._method, self._header(body, properties), *self._body(body)]
        channel.delivery_tag += 1
        tag = channel.delivery_tag
        confirmation: asyncio.Future[object] = channel.create_future()
        channel.confirmations[tag] = confirmation
        channel.message_id_delivery_tag[message_id] = tag

        def forget_message_id(_: asyncio.Future[object]) -> None:
            if channel.message_id_delivery_tag.get(message_id) == tag:
                channel.message_id_delivery_tag.pop(message_id)

        confirmation.add_done_callback(forget_message_id)
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.extend(frames)
        return confirmation

    def _header(self, body: bytes, properties: bytes) -> bytes:
        # pamqp's content header frame: type 2, channel, size; class 60, weight 0, body size.
        size = _HEADER_START.size - 7 + len(properties)
        start = _HEADER_START.pack(2, self._number, size, 60, 0, len(body))
        return start + properties + _FRAME_END

    def _body(self, body: bytes) -> list[bytes]:
        if not body:
            return []
        size = self._max_content
        return [
            pamqp.frame.marshal(ContentBody(body[at : at + size]), self._number)
            for at in range(0, len(body), size)
        ]

    def _flush(self) -> None:
        if not self._pending:
            return
        frame = ChannelFrame(payload=b"".join(self._pending), should_close=False)
        self._pending = []
        if self.channel.is_closed:
            return  # its close rejected the confirmations; nothing may be sent on it
        queue = self.channel.write_queue
        if not self._backlog and not queue.full():
            queue.put_nowait(frame)
            return
        self._backlog.append(frame)
        if self._putting is None:
            self._putting = asyncio.create_task(self._put_backlog(), context=contextvars.Context())

    async def _put_backlog(self) -> None:
        try:
            while self._backlog and not self.channel.is_closed:
                await self.channel.write_queue.put(self._backlog[0])
                self._backlog.popleft()
        finally:
            # A closed channel's confirmations were rejected: what is left is never sent.
            self._backlog.clear()
            self._putting = None


async def _confirming_channel(
    connection: AbstractRobustConnection, settings: Settings
) -> tuple[AbstractChannel, str]:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    topology = await declare_topology(channel, settings.amqp_prefix, settings.delivery_limit)
    return channel, topology.names.exchange
