"""`deskledger worker`: consume webhooks into the event store and projections."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import structlog

from services import runner
from services.runner import positive_int
from services.worker import metrics
from services.worker.consumer import Worker
from shared.settings import Settings, settings_help

log = structlog.get_logger()


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "worker",
        help="consume webhooks from RabbitMQ into the event store and projections",
        description=(
            "Consume the webhook queue (DESKLEDGER_AMQP_PREFIX.webhooks) and store every delivery: "
            "batches of up to DESKLEDGER_BATCH_SIZE messages (waiting at most DESKLEDGER_BATCH_MS "
            "to fill one) are written in one PostgreSQL transaction - delivery rows, new events, "
            "projection rows - and acked after COMMIT. Undecodable webhooks are recorded as "
            "`rejected` (see `deskledger replay --reprocess-rejected`). When PostgreSQL is "
            "unreachable the worker pauses and retries; nothing is dead-lettered for it. Run as "
            "many workers as you like: duplicates become one event. SIGTERM/Ctrl-C: stop "
            "consuming, finish the batch in hand, ack, exit 0; unacked messages return to the "
            "queue."
        ),
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=1,
        metavar="N",
        help="batches in flight at once within this process (default 1; appends are serialised "
        "across all workers, so more mostly overlaps decoding and network waits)",
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="exit once the queue is empty (drain mode, for scripts and tests)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return runner.run("worker", settings, lambda: _main(settings, args.concurrency, args.burst))


async def _main(settings: Settings, concurrency: int, burst: bool) -> int:
    worker = Worker(settings, concurrency=concurrency, burst=burst)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    http = await metrics.start_http(settings.worker_metrics_port, worker.ready)
    log.info(
        "worker_starting",
        database=settings.safe_database_url,
        amqp=settings.safe_amqp_url,
        prefix=settings.amqp_prefix,
        metrics_port=settings.worker_metrics_port,
    )
    try:
        await worker.run()
    finally:
        if http is not None:
            await http.cleanup()
    log.info("worker_stopped")
    return 0
