"""The load driver of the fault tests: sends webhooks like UseDesk and remembers every answer.

A webhook is retried after a 5xx or a failed connection (with doubling backoff, like a sender
that keeps its queue), never after a 2xx or a 4xx. Every attempt is kept with its start and end
time, so a test can ask what was answered while a fault was on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from services.ingress.app import WEBHOOK_PATH
from tests.helpers.webhooks import Webhook


@dataclass(frozen=True, slots=True)
class Attempt:
    started: float  # time.monotonic()
    finished: float
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    delivery_id: str | None = None
    error: str | None = None


@dataclass(slots=True)
class Sent:
    webhook: Webhook
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def acknowledged(self) -> Attempt | None:
        return next((a for a in self.attempts if a.status == 200), None)


@dataclass
class RetryPolicy:
    retries: int = 5  # attempts after the first
    backoff: float = 0.2  # seconds before the first retry, doubled each time
    max_backoff: float = 2.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * 2**attempt))


class Driver:
    """Send `webhooks` to `url()` (a callable, so a test can move traffic between ingresses)."""

    def __init__(
        self,
        url: str | Callable[[], str],
        webhooks: Iterable[Webhook],
        *,
        concurrency: int = 8,
        rate: float | None = None,
        policy: RetryPolicy | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._url = url if callable(url) else (lambda: url)
        self.sent = [Sent(webhook) for webhook in webhooks]
        self.concurrency = concurrency
        self.rate = rate  # webhooks started per second at most (spreads the load over a fault)
        self.policy = policy or RetryPolicy()
        self.timeout = timeout
        self._progress = asyncio.Condition()
        self.finished = 0

    @property
    def acknowledged(self) -> int:
        return sum(1 for s in self.sent if s.acknowledged is not None)

    def attempts(self) -> list[Attempt]:
        return [a for s in self.sent for a in s.attempts]

    def statuses(self) -> dict[int | None, int]:
        counts: dict[int | None, int] = {}
        for attempt in self.attempts():
            counts[attempt.status] = counts.get(attempt.status, 0) + 1
        return counts

    async def run(self) -> None:
        """Send every webhook until acknowledged, refused or out of retries."""
        slots = asyncio.Semaphore(self.concurrency)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            start = time.monotonic()
            tasks = []
            for number, sent in enumerate(self.sent):
                if self.rate:
                    await asyncio.sleep(max(0.0, start + number / self.rate - time.monotonic()))
                await slots.acquire()
                tasks.append(asyncio.create_task(self._deliver(http, sent, slots)))
            await asyncio.gather(*tasks)

    async def wait_acknowledged(self, count: int, within: float = 60) -> None:
        """Until `count` webhooks have a 200 (the point where a test injects its fault)."""
        await self.wait_until(lambda: self.acknowledged >= count, within)
        if self.acknowledged < count:
            raise AssertionError(f"only {self.acknowledged} of {count} webhooks acknowledged")

    async def wait_refusals(self, count: int, within: float = 60) -> None:
        """Until `count` more attempts have failed (5xx or no answer) from now on."""
        target = self.failed_attempts() + count
        await self.wait_until(lambda: self.failed_attempts() >= target, within)
        if self.failed_attempts() < target:
            raise AssertionError(f"the fault never showed: {self.statuses()}")

    def failed_attempts(self) -> int:
        return sum(1 for a in self.attempts() if a.status is None or a.status >= 500)

    async def wait_until(self, predicate: Callable[[], bool], within: float = 60) -> None:
        """Until `predicate()` holds or every webhook is finished."""
        async with asyncio.timeout(within), self._progress:
            await self._progress.wait_for(lambda: predicate() or self.finished == len(self.sent))

    async def _deliver(self, http: aiohttp.ClientSession, sent: Sent, slots: Any) -> None:
        try:
            for number in range(self.policy.retries + 1):
                attempt = await self._post(http, sent.webhook)
                sent.attempts.append(attempt)
                await self._notify()
                if attempt.status is not None and attempt.status < 500:
                    return
                if number < self.policy.retries:
                    await asyncio.sleep(self.policy.delay(number))
        finally:
            slots.release()
            self.finished += 1
            await self._notify()

    async def _notify(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def _post(self, http: aiohttp.ClientSession, webhook: Webhook) -> Attempt:
        started = time.monotonic()
        headers = {"Content-Type": webhook.content_type}
        try:
            async with http.post(
                self._url() + WEBHOOK_PATH, data=webhook.body, headers=headers
            ) as response:
                answer: dict[str, Any] = {}
                with contextlib.suppress(aiohttp.ContentTypeError, ValueError):
                    answer = await response.json()
                delivery_id = answer.get("delivery_id") if response.status == 200 else None
                error = None if response.status == 200 else str(answer.get("error"))
                return Attempt(started, time.monotonic(), response.status, delivery_id, error)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Attempt(started, time.monotonic(), None, None, f"{type(exc).__name__}: {exc}")


def acknowledged_ids(driver: Driver) -> list[str]:
    """The delivery ids of every 200 so far."""
    return [
        a.delivery_id
        for s in driver.sent
        if (a := s.acknowledged) is not None and a.delivery_id is not None
    ]
