"""Python load generators: a closed loop (wrk's stand-in in smoke runs) and an open loop.

The open loop sends request `i` at `start + i / rate` whatever happened to the others, and times
each answer from that scheduled moment, so a stall shows up in the latencies instead of quietly
lowering the rate (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

HEADERS = {"Content-Type": "application/json"}


@dataclass
class Sent:
    scheduled: float  # time.monotonic()
    started: float = 0.0  # later than scheduled when the sender fell behind
    answered: float = 0.0
    status: int = 0
    delivery_id: str | None = None


@dataclass
class LoadSummary:
    requests: int
    seconds: float
    errors: int
    latencies: list[float] = field(default_factory=list)  # seconds, sorted

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, share: float) -> float:
        return percentile(self.latencies, share)


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of sorted `values` (0 when empty)."""
    if not values:
        return 0.0
    rank = min(len(values) - 1, max(0, math.ceil(share * len(values)) - 1))
    return values[rank]


async def closed_loop(
    url: str, bodies: Sequence[bytes], connections: int, seconds: float
) -> LoadSummary:
    """`connections` clients, each POSTing the next body as soon as the last was answered."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def client(offset: int) -> None:
            nonlocal errors
            index = offset
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                body = bodies[index % len(bodies)]
                index += connections
                async with http.post(url, data=body, headers=HEADERS) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(connections)))
        elapsed = time.perf_counter() - started
    return LoadSummary(len(latencies), elapsed, errors, sorted(latencies))


async def open_loop(url: str, bodies: Sequence[bytes], rate: float) -> list[Sent]:
    """POST every body once, body `i` at `i / rate` seconds after the start."""
    sent = [Sent(0.0) for _ in bodies]
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def post(index: int) -> None:
            record = sent[index]
            try:
                async with http.post(url, data=bodies[index], headers=HEADERS) as response:
                    answer = await response.json()
                    record.status = response.status
                    record.delivery_id = answer.get("delivery_id")
            except (aiohttp.ClientError, ValueError):
                record.status = -1
            record.answered = time.monotonic()

        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic() + 0.05
        for index in range(len(bodies)):
            scheduled = start + index / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[index].scheduled = scheduled
            sent[index].started = time.monotonic()
            tasks.append(asyncio.create_task(post(index)))
        await asyncio.gather(*tasks)
    return sent
