"""Worker: webhooks/s from a pre-filled queue to committed events and projections.

Three runs on the same corpus, each in a fresh database and queue:
- ours: `python -m services worker --burst` with the default settings (batches of 500);
- per message: the same command with DESKLEDGER_BATCH_SIZE=1 (same decode, one transaction and
  one ack per message) on the first part of the corpus;
- raw COPY: the rows the worker stored in `events`, copied into an empty `events` table.

The worker's rate is deliveries / (last `batch_committed` - `worker_consuming`), both from its
own JSON log, so interpreter start-up and the burst mode's final idle poll are not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import datetime

import aio_pika
import asyncpg

from shared import envelope
from shared.broker import ROUTING_KEY, declare_topology
from shared.settings import Settings
from tests.benchmarks.corpus import Webhook, generate
from tests.benchmarks.environment import Bench, environ
from tests.benchmarks.procs import Process, python, running
from tests.benchmarks.report import Result, judged

WINDOW = 500  # publishes awaiting their confirms at once while filling a queue
EVENT_COLUMNS = ("ticket_id", "type", "source_id", "occurred_at", "data", "delivery_id")


async def prefill(settings: Settings, webhooks: list[Webhook]) -> None:
    """Publish `webhooks` as the ingress would (persistent, confirmed), many in flight."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = await declare_topology(channel, settings.amqp_prefix, settings.delivery_limit)
        for start in range(0, len(webhooks), WINDOW):
            await asyncio.gather(
                *(
                    topology.exchange.publish(_message(w), ROUTING_KEY, mandatory=True, timeout=30)
                    for w in webhooks[start : start + WINDOW]
                )
            )


def _message(webhook: Webhook) -> aio_pika.Message:
    delivery = envelope.accepted(webhook.kind, webhook.content_type, webhook.body, webhook.body)
    return envelope.message(delivery)


def consume_seconds(log: str) -> float:
    """From `worker_consuming` to the last `batch_committed`, by the worker's own clock."""
    start = end = None
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        moment = datetime.fromisoformat(entry["timestamp"])
        if entry["event"] == "worker_consuming":
            start = moment
        elif entry["event"] == "batch_committed":
            end = moment
    if start is None or end is None:
        raise RuntimeError("the worker logged no `worker_consuming` or no `batch_committed`")
    return (end - start).total_seconds()


async def drain(bench: Bench, label: str, webhooks: list[Webhook], **changes: object) -> float:
    """Fill a fresh queue, drain it with the real worker process; webhooks/s."""
    url = await bench.database(label)
    prefix = await bench.prefix(label)
    settings = bench.settings(url, prefix, **changes)
    await prefill(settings, webhooks)
    argv = python("-m", "services", "worker", "--burst")
    async with running(argv, environ(settings), bench.log_path(label)) as proc:
        await _until_stored(proc, url, len(webhooks))
        # Burst mode exits by itself once it sees the queue empty; SIGTERM if it does not.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.process.wait(), 2)
    await bench.drop_topology(prefix)
    return len(webhooks) / consume_seconds(proc.log())


async def _until_stored(proc: Process, url: str, count: int, within: float = 600) -> None:
    """Wait until `count` deliveries are committed (the worker's own exit is not relied on)."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + within
        while (stored := await conn.fetchval("SELECT count(*) FROM deliveries")) < count:
            if proc.process.returncode is not None:
                raise proc.failed(f"worker exited {proc.process.returncode} at {stored}/{count}")
            if time.monotonic() > deadline:
                raise proc.failed(f"only {stored} of {count} deliveries stored in {within} s")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def copy_rate(bench: Bench, source_url: str) -> tuple[float, int]:
    """Rows/s of a raw COPY of `events` as the worker stored them, into an empty store."""
    source = await asyncpg.connect(source_url)
    try:
        rows = await source.fetch(
            "SELECT ticket_id, type, source_id, occurred_at, data::text, delivery_id"
            " FROM events ORDER BY position"
        )
    finally:
        await source.close()
    target = await asyncpg.connect(await bench.database("copy"))
    try:
        records = [tuple(row) for row in rows]
        started = time.perf_counter()
        async with target.transaction():
            await target.copy_records_to_table("events", records=records, columns=EVENT_COLUMNS)
        seconds = time.perf_counter() - started
    finally:
        await target.close()
    return len(records) / seconds, len(records)


async def run(bench: Bench) -> list[Result]:
    webhooks = generate(300 if bench.smoke else 50_000)
    small = webhooks[: 100 if bench.smoke else 4_000]
    ours = await drain(bench, "worker", webhooks)
    single = await drain(bench, "worker_single", small, batch_size=1)
    copied, events = await copy_rate(bench, bench.urls.database(f"{bench.name}_worker"))
    result = Result(
        name="worker_throughput",
        value=ours,
        unit="webhooks/s",
        baseline="same worker, one transaction and one ack per message",
        baseline_value=single,
        target=">= 20,000/s and >= 8x per-message",
        notes=f"{len(webhooks)} webhooks pre-filled (per-message run: first {len(small)})",
    )
    ceiling = Result(
        name="worker_vs_raw_copy",
        value=ours,
        unit="webhooks/s",
        baseline="raw COPY of the same event rows (rows/s)",
        baseline_value=copied,
        notes=f"{events} events; COPY writes only `events`, the worker also deliveries + 4 tables",
    )
    return [
        judged(result, ours >= 20_000, (result.ratio or 0) >= 8, smoke=bench.smoke),
        ceiling,
    ]
