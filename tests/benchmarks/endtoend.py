"""End to end: POST → event and projection rows committed, at a steady 1,000 webhooks/s.

One `deskledger ingress` and one `deskledger worker` (default settings) run as processes; this
process sends the corpus open-loop (webhook i at i/rate s) and, on its own connection, polls
`events` for new positions every POLL seconds. Measured, per webhook that became an event:

- visible: from the webhook's scheduled send time to the first poll that saw its event row.
  The event, its delivery row and its projection rows commit in one transaction, so this is
  "POST to projection row", with up to POLL (+ one query) of polling delay included;
- http: scheduled send time to the ingress's 200 (all webhooks, duplicates too);
- db: `events.recorded_at - deliveries.received_at`, the database's view (worker transaction
  start minus the ingress's receive time), for comparison.
The first WARMUP seconds are sent but not counted. Duplicates (no new event) count in http only.

The measurement runs RUNS times in a row (each with a fresh database and queues); the result is
the worst p99 of them, so "met" means met on every one of RUNS consecutive runs. Each run also
meters what a webhook costs (`tests.benchmarks.cost`): CPU in the ingress, the worker,
PostgreSQL and RabbitMQ, bytes written, WAL; the run with the median CPU total is the bench's
cost table (`results.json` → `cost`).
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
import uuid
from typing import Any

import asyncpg

from tests.benchmarks.corpus import generate
from tests.benchmarks.cost import Meter, sizing
from tests.benchmarks.environment import Bench, environ
from tests.benchmarks.loadgen import Sent, open_loop, percentile
from tests.benchmarks.procs import python, running, until_http_ok, until_logged
from tests.benchmarks.report import Result, judged
from tests.helpers.services import free_port

RATE = 1000
SECONDS = 30
WARMUP = 3
RUNS = 3
POLL = 0.01
NEW_EVENTS = "SELECT position, delivery_id FROM events WHERE position > $1 ORDER BY position"
DB_LATENCY = """
SELECT extract(epoch FROM e.recorded_at - d.received_at)
FROM events AS e
JOIN deliveries AS d USING (delivery_id)
"""


class Poller:
    """When each event became visible, by `time.monotonic()`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: dict[uuid.UUID, float] = {}
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        conn = await asyncpg.connect(self.url)
        last = 0
        try:
            while not self.stopping.is_set():
                rows = await conn.fetch(NEW_EVENTS, last)
                now = time.monotonic()
                for row in rows:
                    self.seen[row["delivery_id"]] = now
                    last = row["position"]
                await asyncio.sleep(POLL)
        finally:
            await conn.close()


async def _until_quiet(url: str, count: int, within: float = 60) -> None:
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + within
        while await conn.fetchval("SELECT count(*) FROM deliveries") < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not every one of {count} deliveries stored in {within} s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(POLL * 5)  # the poller's last round
    finally:
        await conn.close()


async def _db_latencies(url: str) -> list[float]:
    conn = await asyncpg.connect(url)
    try:
        return sorted(float(row[0]) for row in await conn.fetch(DB_LATENCY))
    finally:
        await conn.close()


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(
    bench: Bench, rate: int, seconds: float, warmup: float, label: str = "endtoend"
) -> dict[str, Any]:
    bodies = [w.body for w in generate(int(rate * seconds))]
    url = await bench.database(label)
    prefix = await bench.prefix(label)
    port = free_port()
    settings = bench.settings(url, prefix, http_port=port)
    env = environ(settings)
    base = f"http://127.0.0.1:{port}"
    worker_log, ingress_log = bench.log_path("e2e-worker"), bench.log_path("e2e-ingress")
    async with (
        running(python("-m", "services", "worker"), env, worker_log) as worker,
        running(python("-m", "services", "ingress"), env, ingress_log) as ingress,
    ):
        await until_http_ok(ingress, base + "/readyz")
        await until_logged(worker, "worker_consuming")
        poller = Poller(url)
        polling = asyncio.create_task(poller.run())
        meter = Meter(url, {"ingress": ingress.process.pid, "worker": worker.process.pid})
        await meter.snapshot()
        sender_started = _own_cpu_seconds()
        sent = await open_loop(base + "/webhooks/usedesk", bodies, rate)
        accepted = sum(1 for s in sent if s.status == 200)
        await _until_quiet(url, accepted)
        sender = _own_cpu_seconds() - sender_started
        await meter.snapshot()
        poller.stopping.set()
        await polling
    await bench.drop_topology(prefix)
    summary = _summary(sent, poller.seen, await _db_latencies(url), sent[0].scheduled + warmup)
    cost = meter.per_webhook(accepted)
    for name in ("ingress", "worker"):  # share of one core over the metered window
        summary[f"{name}_cpu_share"] = cost["cpu_us"][name] * accepted / 1e6 / cost["seconds"]
    cost["where"] = (
        f"end to end at {rate:,}/s offered: one ingress, one worker, default settings; "
        f"the load generator and poller used {sender * 1e6 / max(accepted, 1):.0f} µs more"
    )
    cost["sizing"] = sizing(cost["cpu_us_total"])
    # How busy the machine was: every metered process plus the sender, over all cores. Near 1,
    # every stage queues behind the others and latency is set by the machine, not by a stage.
    busy_seconds = cost["cpu_us_total"] * accepted / 1e6 + sender
    cost["machine_busy_share"] = round(busy_seconds / (cost["seconds"] * (os.cpu_count() or 1)), 3)
    summary["cost"] = cost
    return summary


def _summary(
    sent: list[Sent], seen: dict[uuid.UUID, float], db: list[float], counted_from: float
) -> dict[str, Any]:
    counted = [s for s in sent if s.scheduled >= counted_from]
    http = sorted(s.answered - s.scheduled for s in counted if s.status == 200)
    visible = sorted(
        seen[key] - s.scheduled
        for s in counted
        if s.delivery_id and (key := uuid.UUID(s.delivery_id)) in seen
    )
    span = counted[-1].started - counted[0].started if len(counted) > 1 else 0.0
    return {
        "sent_rate": len(counted) / span if span > 0 else 0.0,
        "sender_lag_p99_ms": percentile(sorted(s.started - s.scheduled for s in counted), 0.99)
        * 1e3,
        "counted": len(counted),
        "refused": sum(1 for s in counted if s.status != 200),
        "events": len(visible),
        "visible_p50_ms": percentile(visible, 0.5) * 1e3,
        "visible_p99_ms": percentile(visible, 0.99) * 1e3,
        "visible_max_ms": (visible[-1] if visible else 0) * 1e3,
        "http_p50_ms": percentile(http, 0.5) * 1e3,
        "http_p99_ms": percentile(http, 0.99) * 1e3,
        "db_p50_ms": percentile(db, 0.5) * 1e3,
        "db_p99_ms": percentile(db, 0.99) * 1e3,
    }


async def run(bench: Bench) -> list[Result]:
    if bench.smoke:
        rate, seconds, warmup, runs = 50, 2.0, 0.5, 1
    else:
        rate, seconds, warmup, runs = RATE, float(SECONDS), float(WARMUP), RUNS
    measured = []
    for index in range(runs):
        measured.append(await measure(bench, rate, seconds, warmup, f"endtoend{index + 1}"))
        print(
            f"[bench]   endtoend run {index + 1}: p99 {measured[-1]['visible_p99_ms']:.0f} ms, "
            f"{measured[-1]['refused']} refused",
            flush=True,
        )
    m = max(measured, key=lambda one: one["visible_p99_ms"])
    by_cpu = sorted(measured, key=lambda one: one["cost"]["cpu_us_total"])
    bench.costs["endtoend"] = by_cpu[len(by_cpu) // 2]["cost"]
    p99s = ", ".join(f"{one['visible_p99_ms']:.0f}" for one in measured)
    result = Result(
        name="endtoend_p99",
        value=m["visible_p99_ms"],
        unit="ms",
        baseline="the same webhooks' HTTP answer p99",
        baseline_value=m["http_p99_ms"],
        target=f"<= 250 ms at {RATE:,}/s, nothing refused, on {RUNS} consecutive runs",
        notes=(
            f"worst of {runs} runs (p99s {p99s} ms); POST to committed event+projection rows, "
            f"{m['sent_rate']:.0f}/s offered, {m['refused']:.0f} refused; "
            f"p50 {m['visible_p50_ms']:.0f} ms; http p50 {m['http_p50_ms']:.1f} ms; "
            f"db recorded_at-received_at p50/p99 {m['db_p50_ms']:.0f}/{m['db_p99_ms']:.0f} ms"
        ),
        details={"runs": measured},
    )
    steady = all(one["sent_rate"] >= 0.95 * rate for one in measured)
    refused = sum(one["refused"] for one in measured)
    return [judged(result, m["visible_p99_ms"] <= 250, steady, not refused, smoke=bench.smoke)]
