"""The ingress application: routes, the broker connection's lifetime, health and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aiohttp import web

from services.ingress.metrics import METRICS_CONTENT_TYPE, IngressMetrics
from services.ingress.publisher import Publisher
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
    )
    app[SETTINGS] = settings
    app[STATE] = state
    app[METRICS] = metrics
    app.cleanup_ctx.append(_broker)
    app.router.add_post(WEBHOOK_PATH, WebhookEndpoint(settings, state, metrics).handle)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.yaml", _openapi)
    return app


def require_secrets(settings: Settings) -> None:
    """An ingress without secrets would refuse every webhook (or, worse, accept any)."""
    if not settings.secrets and not settings.allow_any_secret:
        raise SettingsError(
            "DESKLEDGER_SECRETS: expected at least one secret (the API channel's token or app id);"
            " set DESKLEDGER_ALLOW_ANY_SECRET=1 to accept any secret in development"
        )


async def _broker(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    publisher = await Publisher.open(settings)
    app[STATE].publisher = publisher
    log.info("broker_connected", amqp_url=settings.safe_amqp_url, prefix=settings.amqp_prefix)
    yield
    app[STATE].publisher = None
    await publisher.close()


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.ready:
        return web.json_response({"status": "ready"})
    reason = "draining" if state.draining else "broker_unavailable"
    return web.json_response({"status": "not_ready", "reason": reason}, status=503)


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI, content_type="application/yaml")


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})
