"""The worker's Prometheus metrics and its small HTTP endpoint (/metrics, /healthz, /readyz)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

DELIVERIES = Counter(
    "deskledger_worker_deliveries_total", "Deliveries processed, by outcome", ["outcome"]
)
BATCHES = Counter("deskledger_worker_batches_total", "Batches committed")
BATCH_SECONDS = Histogram(
    "deskledger_worker_batch_seconds",
    "Time from taking a batch to acking it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS = Counter("deskledger_worker_events_appended_total", "Events appended to the store")
DB_RETRIES = Counter(
    "deskledger_worker_db_retries_total", "Batch transactions retried after a transient failure"
)
FAILED = Counter(
    "deskledger_worker_failed_deliveries_total",
    "Deliveries returned to the queue after a non-transient failure (dead-lettered at the limit)",
)
SUSPECTED_GAPS = Counter(
    "deskledger_worker_suspected_gaps_total",
    "Suspected gaps brought to light (a change's old value is not what the events before it "
    "left: a webhook lost before it reached us?), by field",
    ["field"],
)
BROKER_CONNECTED = Gauge("deskledger_worker_broker_connected", "1 while consuming from RabbitMQ")
DATABASE_OK = Gauge("deskledger_worker_database_ok", "0 while PostgreSQL transactions fail")
# Ingress receipt (the delivery's `received_at`) to the commit of the batch that recorded it,
# per delivery: how far behind the store is. Wide buckets: after an outage, hours.
LAG_SECONDS = Histogram(
    "deskledger_worker_lag_seconds",
    "Seconds from the ingress's receipt of a delivery to the commit that recorded it",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
SOURCE_CLOCK_OFFSET = Gauge(
    "deskledger_source_clock_offset_seconds",
    "Median of UseDesk's naive webhook time read as UTC minus our receive time, over recent "
    "comments and changes: the UTC offset of the zone UseDesk's dates are in",
)


async def start_http(port: int, ready: Callable[[], bool]) -> web.AppRunner | None:
    """Serve the endpoints on `port` (0: not at all)."""
    if port == 0:
        return None

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(_: web.Request) -> web.Response:
        ok = ready()
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, port=port).start()
    return runner
