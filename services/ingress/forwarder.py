"""Forwarding the spool to RabbitMQ once it confirms again, in order, at a bounded rate.

One task per ingress process. While the broker connection is up it reads the oldest records not
forwarded yet (a batch from one segment), publishes them pipelined exactly as the handler would
have (same properties, same `delivery_id`), and records how far the broker confirmed: the longest
confirmed run from the batch's start, so a record is never counted as forwarded past one that
was not. A batch that fails is retried after a pause, one record at a time until one is
confirmed. Whatever is sent twice (a confirm lost, a crash before the segment's deletion) is one
delivery to the worker, which recognises a `delivery_id` it has stored.

Live webhooks do not wait for the spool: they are published directly while the broker confirms.
The forwarder takes at most `DESKLEDGER_SPOOL_FORWARD_RATE` records a second, so a large backlog
leaves the broker's and the process's capacity to live traffic. Once the process is draining
(SIGTERM: no new webhooks come) it forwards without that bound, and on the way out it keeps
going for as long as it is given (`stop`); what is left stays on disk for the next start.

Every `ADOPT_SECONDS` it also looks for slots that no process holds (one left by a process that
died) and takes them over.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Callable

import msgspec
import structlog

from services.ingress import segment
from services.ingress.metrics import IngressMetrics
from services.ingress.publisher import Publisher, PublishFailed
from services.ingress.slot import Slot
from services.ingress.spool import Spool
from shared import envelope

log = structlog.get_logger()

BATCH = 100
IDLE_SECONDS = 1.0
RETRY_SECONDS = 1.0
ADOPT_SECONDS = 5.0
TIDY_SECONDS = 1.0


class Forwarder:
    def __init__(
        self,
        spool: Spool,
        publisher: Callable[[], Publisher | None],
        metrics: IngressMetrics,
        *,
        rate: int,
        broker_ok: Callable[[bool], None],
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self._spool = spool
        self._publisher = publisher
        self._rate = rate
        self._metrics = metrics
        self._broker_ok = broker_ok
        self._draining = draining
        self._batch = min(BATCH, rate)
        self._bounded = True
        self._next_adopt = 0.0
        self._last_tidy = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), context=contextvars.Context())

    async def stop(self, drain_within: float) -> None:
        """Forward what is left, unbounded, for at most `drain_within` seconds; then stop."""
        self._bounded = False
        deadline = time.monotonic() + drain_within
        # Polled: the spool's figures change in many places, none of them worth an event.
        while self._spool.records and self._connected() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if self._spool.records:
            log.info("spool_left_for_next_start", records=self._spool.records)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _connected(self) -> bool:
        publisher = self._publisher()
        return publisher is not None and publisher.connected

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop forwarding for good
                log.exception("spool_forwarder_failed")
                await asyncio.sleep(RETRY_SECONDS)

    async def _step(self) -> None:
        if time.monotonic() >= self._next_adopt:
            self._next_adopt = time.monotonic() + ADOPT_SECONDS
            self._spool.adopt(await _claimed_orphans(self._spool))
        publisher = self._publisher()
        if publisher is None or not publisher.connected:
            if publisher is not None:
                publisher.revive()  # a channel the broker closed is not reopened by itself
            await asyncio.sleep(0.2)
            return
        self._spool.appended.clear()
        found = await asyncio.to_thread(self._spool.next_batch, self._batch)
        if found is None:
            self._tidy(force=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_SECONDS):
                    await self._spool.appended.wait()
            return
        held, records = found
        started = time.monotonic()
        sent = await self._forward(publisher, records)
        self._spool.confirmed(held, records, sent)
        self._metrics.spool_forwarded.inc(sent)
        if sent:
            self._broker_ok(True)
        if sent < len(records):
            self._metrics.spool_failed.inc(len(records) - sent)
            self._broker_ok(False)
            self._batch = 1  # probe with one record until the broker confirms again
            await asyncio.sleep(RETRY_SECONDS)
            return
        self._batch = min(BATCH, self._rate)
        self._tidy(force=held.drained)
        if self._bounded and not self._draining():
            await asyncio.sleep(max(0.0, started + len(records) / self._rate - time.monotonic()))

    async def _forward(self, publisher: Publisher, records: list[segment.Record]) -> int:
        """How many records from the start of `records` the broker confirmed."""
        results = await asyncio.gather(*(_publish(publisher, r) for r in records))
        return next((i for i, ok in enumerate(results) if not ok), len(results))

    def _tidy(self, force: bool) -> None:
        if force or time.monotonic() - self._last_tidy >= TIDY_SECONDS:
            self._last_tidy = time.monotonic()
            self._spool.tidy()


async def _publish(publisher: Publisher, record: segment.Record) -> bool:
    try:
        delivery = segment.decode(record.payload)
    except msgspec.DecodeError as exc:
        # Its checksum held, so this is our own bug; it can never be sent as it is.
        log.error("spool_record_undecodable", offset=record.offset, error=str(exc))
        return True
    try:
        await publisher.publish(delivery.body, envelope.properties(delivery))
    except PublishFailed:
        return False
    return True


async def _claimed_orphans(spool: Spool) -> list[Slot]:
    """`spool.claim_orphans()` in a thread; released again if we are cancelled meanwhile."""
    claim = asyncio.ensure_future(asyncio.to_thread(spool.claim_orphans))
    try:
        return await asyncio.shield(claim)
    except asyncio.CancelledError:
        claim.add_done_callback(_release_claimed)
        raise


def _release_claimed(claim: asyncio.Future[list[Slot]]) -> None:
    if not claim.cancelled() and claim.exception() is None:
        for orphan in claim.result():
            orphan.release()
