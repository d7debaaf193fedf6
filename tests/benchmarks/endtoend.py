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
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg

from tests.benchmarks.corpus import generate
from tests.benchmarks.environment import Bench, environ
from tests.benchmarks.loadgen import Sent, open_loop, percentile
from tests.benchmarks.procs import python, running, until_http_ok, until_logged
from tests.benchmarks.report import Result, judged
from tests.helpers.services import free_port

RATE = 1000
SECONDS = 30
WARMUP = 3
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


async def measure(bench: Bench, rate: int, seconds: float, warmup: float) -> dict[str, float]:
    bodies = [w.body for w in generate(int(rate * seconds))]
    url = await bench.database("endtoend")
    prefix = await bench.prefix("endtoend")
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
        cpu = (ingress.cpu_seconds(), worker.cpu_seconds(), time.monotonic())
        sent = await open_loop(base + "/webhooks/usedesk", bodies, rate)
        await _until_quiet(url, sum(1 for s in sent if s.status == 200))
        busy = (ingress.cpu_seconds() - cpu[0], worker.cpu_seconds() - cpu[1])
        elapsed = time.monotonic() - cpu[2]
        poller.stopping.set()
        await polling
    await bench.drop_topology(prefix)
    summary = _summary(sent, poller.seen, await _db_latencies(url), sent[0].scheduled + warmup)
    summary["ingress_cpu_share"] = busy[0] / elapsed
    summary["worker_cpu_share"] = busy[1] / elapsed
    return summary


def _summary(
    sent: list[Sent], seen: dict[uuid.UUID, float], db: list[float], counted_from: float
) -> dict[str, float]:
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
        rate, seconds, warmup = 50, 2.0, 0.5
    else:
        rate, seconds, warmup = RATE, float(SECONDS), float(WARMUP)
    m = await measure(bench, rate, seconds, warmup)
    result = Result(
        name="endtoend_p99",
        value=m["visible_p99_ms"],
        unit="ms",
        baseline="the same webhooks' HTTP answer p99",
        baseline_value=m["http_p99_ms"],
        target=f"<= 250 ms at {RATE:,}/s",
        notes=(
            f"POST to committed event+projection rows, {m['sent_rate']:.0f}/s offered, "
            f"{m['refused']:.0f} refused; "
            f"p50 {m['visible_p50_ms']:.0f} ms; http p50 {m['http_p50_ms']:.1f} ms; "
            f"db recorded_at-received_at p50/p99 {m['db_p50_ms']:.0f}/{m['db_p99_ms']:.0f} ms"
        ),
        details=m,
    )
    steady = m["sent_rate"] >= 0.95 * rate
    return [judged(result, m["visible_p99_ms"] <= 250, steady, not m["refused"], smoke=bench.smoke)]
