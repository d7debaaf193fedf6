"""One ingress process: uvloop, a SO_REUSEPORT listener and a graceful stop on SIGTERM.

Stopping: `/readyz` turns 503 first and the listener stays open for `drain_seconds`, so a load
balancer takes the process out of rotation before connections are refused; then the listener
closes, in-flight requests finish (their publishes are confirmed or answered 503), and only then
is the broker connection closed.
"""

from __future__ import annotations

import asyncio
import gc
import signal

import structlog
from aiohttp import web

from services import runner
from services.ingress.app import STATE, create_app
from services.ingress.protocol import AIOHTTP_LOGGER, IngressRunner
from services.ingress.webhook import IngressState
from shared.settings import Settings

log = structlog.get_logger()

# aiohttp has no deadline for a request's head. Its keep-alive timer is the only bound: a
# connection that has not sent a complete head this long after connecting (or after its last
# response) is closed. It must outlast the load balancer's upstream idle timeout (nginx and AWS
# ALB: 60 s) so that the balancer, not the ingress, closes idle connections.
KEEPALIVE_SECONDS = 75.0
# After a refusal aiohttp reads and discards the rest of the body before closing, because
# closing on unread bytes sends a reset that can destroy the answer on its way to the client.
# Its default (10 s) lets a refused or dribbling client hold the connection far too long.
LINGER_SECONDS = 2.0
LISTEN_BACKLOG = 2048
GC_YOUNG_THRESHOLD = 10_000


def make_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The runner every ingress listener uses, tests included.

    Its connections answer and log unparsable requests without quoting them (`protocol`).
    """
    return IngressRunner(
        app,
        handle_signals=False,
        access_log=None,  # one structured line per webhook is logged by the handler
        logger=AIOHTTP_LOGGER,
        keepalive_timeout=KEEPALIVE_SECONDS,
        lingering_time=LINGER_SECONDS,
        # Refused compressed bodies must not be inflated while aiohttp drains them.
        auto_decompress=False,
        shutdown_timeout=_grace(settings),
    )


def _grace(settings: Settings) -> float:
    """The longest a webhook can take: its body's deadline plus the confirm's."""
    return settings.read_timeout + settings.publish_timeout + 1


def run_process(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; the process exit code."""
    return runner.run("ingress", settings, lambda: _serve(settings), uses="RabbitMQ")


async def _serve(settings: Settings) -> int:
    try:
        await serve(settings)
    except TimeoutError as exc:  # the broker did not answer in time
        raise OSError(f"timed out: {exc}") from exc
    return 0


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app = create_app(settings)
    runner = make_runner(app, settings)
    await runner.setup()
    try:
        site = web.TCPSite(
            runner,
            settings.http_host,
            settings.http_port,
            reuse_port=True,
            backlog=LISTEN_BACKLOG,
        )
        await site.start()
        _tune_gc()
        log.info("ingress_listening", address=runner.addresses)
        await stop.wait()
        app[STATE].draining = True
        log.info("ingress_draining", seconds=settings.drain_seconds)
        await asyncio.sleep(settings.drain_seconds)
        await site.stop()
        await _in_flight_done(app[STATE], _grace(settings))
    finally:
        await runner.cleanup()
    log.info("ingress_stopped")


def _tune_gc() -> None:
    """The cyclic garbage collector, out of the p99's way (measured under wrk -c64).

    Everything imported and set up by now lives as long as the process: frozen, a full
    collection no longer walks it (~50k objects: 7 full collections in 12 s took 290 ms, up to
    56 ms each, while every webhook in flight waited). A webhook's payload holds dozens of
    containers, so at the default threshold of 700 the young generation was collected every few
    webhooks (~940 times, 370 ms); at 10,000 about 120 times, 20 ms. Cycles are rare here (the
    objects of a webhook die by reference counting), so collecting them later costs little.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


async def _in_flight_done(state: IngressState, grace: float) -> None:
    """Wait for the webhooks in flight before the runner's cleanup.

    The cleanup marks every connection closing, and aiohttp then drops the rest of a body still
    on its way: a webhook whose body was arriving would end in 408 instead of being kept.
    """
    try:
        async with asyncio.timeout(grace):
            # Polled, and only here: an event would cost every request a set() and a clear().
            while state.in_flight:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        log.warning("ingress_stopped_with_requests_in_flight", in_flight=state.in_flight)
