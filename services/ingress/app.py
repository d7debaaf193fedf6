"""The ingress application: routes, the broker connection's lifetime, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiohttp import web

from services.ingress.accesslog import WebhookLog
from services.ingress.forwarder import Forwarder
from services.ingress.metrics import (
    METRICS_CONTENT_TYPE,
    REFRESH_SECONDS,
    IngressMetrics,
    SpoolFigures,
)
from services.ingress.publisher import RECONNECT_SECONDS, Publisher
from services.ingress.spool import Spool
from services.ingress.webhook import IngressState, WebhookEndpoint
from shared.errors import SettingsError
from shared.settings import Settings

log = structlog.get_logger()

WEBHOOK_PATH = "/webhooks/usedesk"
# The OpenAPI description, shipped in the package (docs/openapi.yaml is the same file).
OPENAPI = (Path(__file__).parent / "openapi.yaml").read_bytes()

SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("state", IngressState)
METRICS = web.AppKey("metrics", IngressMetrics)


def create_app(settings: Settings) -> web.Application:
    """The ingress app; the broker connection opens on startup and closes on cleanup."""
    require_secrets(settings)
    if not settings.secrets:
        log.warning("ingress_accepts_any_secret", setting="DESKLEDGER_ALLOW_ANY_SECRET")
    app = web.Application()
    state = IngressState()
    metrics = IngressMetrics(
        broker_connected=lambda: state.broker_connected,
        in_flight=lambda: state.in_flight,
        reading=lambda: state.reading,
        spool=SpoolFigures(
            bytes=lambda: state.spool.bytes if state.spool else 0,
            records=lambda: state.spool.records if state.spool else 0,
            oldest_seconds=lambda: state.spool.oldest_age() if state.spool else 0.0,
        ),
    )
    app[SETTINGS] = settings
    app[STATE] = state
    app[METRICS] = metrics
    app.cleanup_ctx.append(_broker if settings.spool_dir is None else _broker_and_spool)
    if metrics.shared_dir is not None:
        app.cleanup_ctx.append(_refreshing_metrics)
    webhook_log = WebhookLog(
        "ingress", settings.log_level, settings.log_format, settings.ingress_log_sample
    )
    app.router.add_post(WEBHOOK_PATH, WebhookEndpoint(settings, state, metrics, webhook_log).handle)
    app.on_cleanup.append(lambda _: _flushed(webhook_log))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.yaml", _openapi)
    return app


async def _flushed(webhook_log: WebhookLog) -> None:
    """The last webhooks' lines, before the process exits."""
    webhook_log.flush()


def require_secrets(settings: Settings) -> None:
    """An ingress without secrets would refuse every webhook (or, worse, accept any)."""
    if not settings.secrets and not settings.allow_any_secret:
        raise SettingsError(
            "DESKLEDGER_SECRETS: expected at least one secret (the API channel's token or app id);"
            " set DESKLEDGER_ALLOW_ANY_SECRET=1 to accept any secret in development"
        )


async def _refreshing_metrics(app: web.Application) -> AsyncIterator[None]:
    """With several processes, a scrape reads the others' gauges from the shared directory:
    keep this process's there no older than REFRESH_SECONDS."""

    async def refresh() -> None:
        while True:
            app[METRICS].refresh()
            await asyncio.sleep(REFRESH_SECONDS)

    task = asyncio.create_task(refresh(), context=contextvars.Context())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _broker(app: web.Application) -> AsyncIterator[None]:
    """Without a spool: the broker must answer at start (exit 1 otherwise)."""
    settings = app[SETTINGS]
    publisher = await Publisher.open(settings)
    app[STATE].publisher = publisher
    log.info("broker_connected", amqp_url=settings.safe_amqp_url, prefix=settings.amqp_prefix)
    yield
    app[STATE].publisher = None
    await publisher.close()


async def _broker_and_spool(app: web.Application) -> AsyncIterator[None]:
    """With a spool: it opens first (an unusable directory stops the start, exit 2); the
    broker may be down at start, webhooks are spooled until it answers; the forwarder drains
    the spool into it."""
    settings, state = app[SETTINGS], app[STATE]
    assert settings.spool_dir is not None
    spool = await asyncio.to_thread(
        Spool.open, settings.spool_dir, settings.amqp_prefix, settings.spool_max_bytes
    )
    state.spool = spool
    # The first attempt is awaited, so a normal start publishes from the first webhook on; a
    # broker that is down does not hold the start up for longer than the publish deadline.
    connecting: asyncio.Task[None] | None = None
    if not await _connected(app):
        connecting = asyncio.create_task(_connect(app), context=contextvars.Context())
    forwarder = Forwarder(
        spool,
        lambda: state.publisher,
        app[METRICS],
        rate=settings.spool_forward_rate,
        broker_ok=state.broker_ok,
        draining=lambda: state.draining,
    )
    forwarder.start()
    try:
        yield
    finally:
        await forwarder.stop(drain_within=settings.publish_timeout)
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
        await spool.close()
        publisher, state.publisher, state.spool = state.publisher, None, None
        if publisher is not None:
            await publisher.close()


async def _connect(app: web.Application) -> None:
    """Retry until the broker answers (the spool holds webhooks meanwhile); afterwards the
    robust connection reconnects by itself."""
    while not await _connected(app, quiet=True):  # noqa: ASYNC110 - a retry, not a wait
        await asyncio.sleep(RECONNECT_SECONDS)


async def _connected(app: web.Application, quiet: bool = False) -> bool:
    settings, state = app[SETTINGS], app[STATE]
    try:
        async with asyncio.timeout(settings.publish_timeout):
            state.publisher = await Publisher.open(settings)
    except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
        if not quiet:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("broker_unreachable_spooling", error=error, spool=str(settings.spool_dir))
        return False
    log.info("broker_connected", amqp_url=settings.safe_amqp_url, prefix=settings.amqp_prefix)
    return True


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.ready:
        return web.json_response({"status": "ready"})
    if state.draining:
        reason = "draining"
    elif state.spool is not None:
        reason = "broker_unavailable_and_spool_full"
    else:
        reason = "broker_unavailable"
    return web.json_response({"status": "not_ready", "reason": reason}, status=503)


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI, content_type="application/yaml")


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})
