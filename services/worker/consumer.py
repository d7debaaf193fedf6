"""The worker: consume the quorum queue, record batches in one transaction each, ack after COMMIT.

Failure policy (I4, I6):
- a transient database failure (connection lost, PostgreSQL restarting, serialization failure,
  deadlock, or a table or column missing because `migrate` has not run yet) retries the same
  batch with backoff and jitter (workers that all lost the same database must not come back in
  lockstep); while it does, this loop takes no new messages,
  and nothing is acked or rejected. Retrying is safe even when COMMIT's outcome was unknown:
  `recording.record` skips deliveries already stored;
- any other failure of a batch re-runs its messages one by one, so that it is charged to the
  message that caused it and never to its neighbours (issue 19). A message whose values the
  store refuses (a data exception, `refused_by_store`) is recorded as `rejected` with the
  database's reason and acked: reprocessable like any rejection. A message that still fails is
  returned to the queue (nack, requeue) and logged with its delivery id, and the queue's
  `x-delivery-limit` moves it to the dead-letter queue after too many attempts;
- a message that does not decode, whatever the decoder raised, is not a failure: it is recorded
  as `rejected` and acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
import asyncpg
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, MessageProcessError

from services.worker import metrics
from services.worker.report import ClockReport, report
from shared.broker import declare_topology
from shared.db import is_transient, schema_behind
from shared.envelope import from_message
from shared.faults import WORKER_AFTER_COMMIT, WORKER_BEFORE_COMMIT, fault_point
from shared.recording import BatchResult, Decoded, decode, record, record_alone
from shared.settings import Settings

log = structlog.get_logger()

MAX_BACKOFF = 30.0
# Messages decoded between two chances for the event loop to serve the batch being recorded.
DECODE_SLICE = 50


class Stopping(Exception):
    """The worker is stopping; the messages in hand go back to the queue unacked."""


class Worker:
    def __init__(self, settings: Settings, concurrency: int = 1, burst: bool = False) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self.burst = burst
        self.stopping = asyncio.Event()
        self._drained = False  # a burst worker found the queue empty and is ending
        self._buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._busy = 0
        self._pool: asyncpg.Pool | None = None
        self._connection: AbstractRobustConnection | None = None
        self._db_ok = True
        self._clock = ClockReport(settings.source_timezone)

    def ready(self) -> bool:
        connected = self._connection is not None and not self._connection.is_closed
        return connected and self._db_ok and not self.stopping.is_set()

    async def run(self) -> None:
        """Consume until `stop()` (or, with `burst`, until the queue is empty)."""
        self._connection = await aio_pika.connect_robust(self.settings.amqp_url)
        try:
            # min_size=0: PostgreSQL may be down at start; the first batch retries until it is up.
            self._pool = await asyncpg.create_pool(
                self.settings.database_url, min_size=0, max_size=self.concurrency + 1
            )
            try:
                await self._consume(self._connection)
            finally:
                await self._pool.close()
        finally:
            await self._connection.close()
            metrics.BROKER_CONNECTED.set(0)

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("worker_stopping")
            self.stopping.set()

    async def _consume(self, connection: AbstractRobustConnection) -> None:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.settings.prefetch)
        topology = await declare_topology(
            channel, self.settings.amqp_prefix, self.settings.delivery_limit
        )
        tag = await topology.queue.consume(self._buffer.put)
        metrics.BROKER_CONNECTED.set(1)
        log.info("worker_consuming", queue=topology.names.queue, concurrency=self.concurrency)
        loops = [asyncio.create_task(self._loop()) for _ in range(self.concurrency)]
        if self.burst:
            loops.append(asyncio.create_task(self._stop_when_drained(topology.names.queue)))
        await self.stopping.wait()
        await topology.queue.cancel(tag)
        await asyncio.gather(*loops)

    async def _stop_when_drained(self, queue_name: str) -> None:
        channel = await self._connection.channel() if self._connection else None
        assert channel is not None
        while not self.stopping.is_set():
            await asyncio.sleep(0.25)
            # robust=False: a robust channel answers a repeated passive declare from its cache,
            # so the count would stay what the first check saw and a long drain never ends.
            declared = await channel.declare_queue(queue_name, passive=True, robust=False)
            idle = self._buffer.empty() and self._busy == 0
            if idle and declared.declaration_result.message_count == 0:
                self._drained = True
                self.stop()
        await channel.close()

    async def _loop(self) -> None:
        """Collect, decode, record, ack: batch after batch. The next batch is collected and
        decoded while the previous one is being recorded (its transaction is mostly waiting on
        PostgreSQL), and recorded only once the previous one is acked, so batches still commit
        and ack in delivery order, one transaction at a time per loop."""
        previous: asyncio.Task[bool] | None = None
        try:
            while not self.stopping.is_set():
                batch = await self._collect()
                if previous is not None and (previous.done() or not batch):
                    if await previous:
                        return
                    previous = None
                if not batch:
                    continue
                self._busy += 1
                started = time.perf_counter()
                decoded: list[Decoded] | Exception
                try:
                    try:
                        decoded = await self._decode_batch(batch)
                    except Exception as exc:  # a bug: `_process` returns the batch to the queue
                        decoded = exc
                    if previous is not None:
                        # SIGTERM while `previous` was the batch in hand: that one is finished,
                        # this one (decoded ahead) goes back. A burst worker stops only once
                        # idle and drained, and records what it holds.
                        stopping = await previous or (self.stopping.is_set() and not self._drained)
                    else:
                        stopping = False
                except BaseException:
                    self._busy -= 1
                    raise
                if stopping:  # this batch goes back to the queue unacked, like the previous
                    self._busy -= 1
                    return
                previous = asyncio.create_task(self._process(batch, decoded, started))
        finally:
            if previous is not None:
                await previous

    async def _process(
        self,
        batch: list[AbstractIncomingMessage],
        decoded: list[Decoded] | Exception,
        started: float,
    ) -> bool:
        """Record and settle one decoded batch; True when the worker is stopping."""
        try:
            if isinstance(decoded, Exception):
                raise decoded
            await self._handle(batch, decoded, started)
        except Stopping:
            return True
        except Exception:
            # Never let one batch end this loop: the consumer would go on taking messages
            # that nothing processes. Return the batch to the queue (its delivery count
            # grows, so a message that always breaks the loop is dead-lettered at the limit).
            log.exception("batch_loop_error", size=len(batch))
            for message in batch:
                with contextlib.suppress(MessageProcessError):  # already settled
                    await _settle(message.nack(requeue=True), 1)
        finally:
            self._busy -= 1
        return False

    async def _decode_batch(self, messages: list[AbstractIncomingMessage]) -> list[Decoded]:
        """Decode in slices, letting the previous batch's statements progress in between."""
        decoded: list[Decoded] = []
        for start in range(0, len(messages), DECODE_SLICE):
            if start:
                await asyncio.sleep(0)
            decoded += [self._decode(m) for m in messages[start : start + DECODE_SLICE]]
        return decoded

    async def _collect(self) -> list[AbstractIncomingMessage]:
        """Up to `batch_size` messages, waiting at most `batch_ms` after the first."""
        loop = asyncio.get_running_loop()
        batch: list[AbstractIncomingMessage] = []
        try:
            batch.append(await asyncio.wait_for(self._buffer.get(), 0.2))
        except TimeoutError:
            return batch
        deadline = loop.time() + self.settings.batch_ms / 1000
        while len(batch) < self.settings.batch_size:
            if not self._buffer.empty():
                batch.append(self._buffer.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._buffer.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _handle(
        self, messages: list[AbstractIncomingMessage], decoded: list[Decoded], started: float
    ) -> None:
        try:
            result = await self._record(decoded)
        except Stopping:
            raise
        except Exception:
            log.exception(
                "batch_failed",
                size=len(messages),
                hint="retrying one by one",
                delivery_ids=[str(d.delivery.delivery_id) for d in decoded],
            )
            await self._one_by_one(messages, decoded)
            return
        await self._ack(messages)
        try:
            report(result, decoded, time.perf_counter() - started)
            self._clock.observe(decoded)
        except Exception:  # acked already: a failing report must not turn into a nack
            log.exception("batch_report_failed")

    def _decode(self, message: AbstractIncomingMessage) -> Decoded:
        return decode(
            from_message(message), self.settings.source_timezone, self.settings.company_id
        )

    async def _record(self, batch: Sequence[Decoded]) -> BatchResult:
        """Record with retries for as long as the failure is transient."""
        assert self._pool is not None
        attempt = 0
        while True:
            try:
                async with self._pool.acquire() as conn:
                    result = await record(conn, batch, before_commit=_before_commit)
                fault_point(WORKER_AFTER_COMMIT)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                attempt += 1
                await self._backoff(attempt, exc)
                continue
            self._db_ok = True
            metrics.DATABASE_OK.set(1)
            return result

    async def _backoff(self, attempt: int, exc: BaseException) -> None:
        self._db_ok = False
        metrics.DATABASE_OK.set(0)
        metrics.DB_RETRIES.inc()
        delay = backoff_delay(attempt)
        if schema_behind(exc):
            log.warning(
                "database_schema_behind",
                attempt=attempt,
                retry_in=round(delay, 2),
                error=repr(exc),
                hint="this worker is newer than the database schema: run `deskledger migrate`; "
                "the batch waits, nothing is rejected or dead-lettered",
            )
        else:
            log.warning(
                "database_unavailable", attempt=attempt, retry_in=round(delay, 2), error=repr(exc)
            )
        try:
            await asyncio.wait_for(self.stopping.wait(), delay)
        except TimeoutError:
            return
        raise Stopping

    async def _one_by_one(
        self, messages: list[AbstractIncomingMessage], decoded: list[Decoded]
    ) -> None:
        for message, item in zip(messages, decoded, strict=True):
            try:
                result = await record_alone(self._record, item)
            except Stopping:
                raise
            except Exception as exc:
                metrics.FAILED.inc()
                log.error(
                    "delivery_failed",
                    delivery_id=str(item.delivery.delivery_id),
                    error=repr(exc),
                    hint="returned to the queue; dead-lettered at the limit",
                )
                await _settle(message.nack(requeue=True), 1)
                continue
            await _settle(message.ack(), 1)
            report(result, [item], 0.0)

    async def _ack(self, messages: list[AbstractIncomingMessage]) -> None:
        if self.concurrency == 1:
            # One batch at a time, in delivery order: one frame acks the whole batch.
            await _settle(messages[-1].ack(multiple=True), len(messages))
            return
        for message in messages:
            await _settle(message.ack(), 1)


def backoff_delay(attempt: int, uniform: Callable[[float, float], float] = random.uniform) -> float:
    """Seconds before retry `attempt` (1, 2, ...): exponential up to `MAX_BACKOFF`, with "equal
    jitter" (a random point in the upper half), so that workers that lost PostgreSQL at the same
    moment spread their retries instead of hitting it together when it comes back."""
    ceiling = min(MAX_BACKOFF, 0.1 * 2 ** min(attempt, 10))
    return uniform(ceiling / 2, ceiling)


async def _settle(action: Awaitable[None], size: int) -> None:
    """Send an ack or a nack, unless the channel that delivered the messages is gone.

    A broker restart or a dropped connection between COMMIT and ack closes that channel: the
    broker requeues its unacked messages by itself, and their redelivery is skipped as already
    processed (I4). Raising here ended the batch loop for good, while the robust connection
    restored the consumer on a new channel and kept taking messages that nothing processed.
    """
    try:
        await action
    except CONNECTION_EXCEPTIONS as exc:
        log.warning(
            "ack_not_sent",
            size=size,
            error=repr(exc),
            hint="the channel is gone; the broker redelivers, the store skips what it has",
        )


def _before_commit() -> None:
    fault_point(WORKER_BEFORE_COMMIT)
