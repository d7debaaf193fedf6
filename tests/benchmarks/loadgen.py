"""Python load generators: a closed loop (wrk's stand-in in smoke runs) and an open loop.

Both speak HTTP/1.1 over keep-alive connections with pre-built requests and a minimal response
parser: on a two-core machine the load generator must leave the server side its CPU, and a
general-purpose client (aiohttp's) costs several times more per request.

The open loop sends request `i` at `start + i / rate` whatever happened to the others, and times
each answer from that scheduled moment, so a stall shows up in the latencies instead of quietly
lowering the rate (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit


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


class Pool:
    """Keep-alive HTTP/1.1 connections to one host; POST JSON bodies, get (status, body)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.head = (
            f"POST {parts.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.write(b"%s%d\r\n\r\n%s" % (self.head, len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        answer = await reader.readexactly(length)
        if b"connection: close" in head.lower():
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status, answer

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def closed_loop(
    url: str, bodies: Sequence[bytes], connections: int, seconds: float
) -> LoadSummary:
    """`connections` clients, each POSTing the next body as soon as the last was answered."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    pool = Pool(url)

    async def client(offset: int) -> None:
        nonlocal errors
        index = offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status, _ = await pool.post(bodies[index % len(bodies)])
            index += connections
            errors += status != 200
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(client(i) for i in range(connections)))
    finally:
        pool.close()
    elapsed = time.perf_counter() - started
    return LoadSummary(len(latencies), elapsed, errors, sorted(latencies))


async def open_loop(url: str, bodies: Sequence[bytes], rate: float) -> list[Sent]:
    """POST every body once, body `i` at `i / rate` seconds after the start."""
    sent = [Sent(0.0) for _ in bodies]
    pool = Pool(url)

    async def post(index: int) -> None:
        record = sent[index]
        try:
            record.status, answer = await pool.post(bodies[index])
            record.delivery_id = json.loads(answer).get("delivery_id")
        except (OSError, asyncio.IncompleteReadError, ValueError):
            record.status = -1
        record.answered = time.monotonic()

    tasks: list[asyncio.Task[None]] = []
    start = time.monotonic() + 0.05
    try:
        for index in range(len(bodies)):
            scheduled = start + index / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[index].scheduled = scheduled
            sent[index].started = time.monotonic()
            tasks.append(asyncio.create_task(post(index)))
        await asyncio.gather(*tasks)
    finally:
        pool.close()
    return sent
