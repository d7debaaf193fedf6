"""`POST /webhooks/usedesk`: a request becomes a confirmed, redacted message or a refusal.

The order of the steps is the cost order: what the headers can refuse goes first, the body is
read under a cap and a deadline, parsed once, authenticated, and only then redacted and published.

Two bounds, on two different things. `DESKLEDGER_MAX_IN_FLIGHT` counts only the requests whose
body is whole (parsing, authenticating, waiting for the broker's confirm): those are what a
broker outage piles up, and beyond the cap the answer is 503 at once. Bodies still arriving are
not counted there, so clients that never finish theirs cannot make every real webhook a 503;
they are bounded by `body.BodyReaders` instead (`DESKLEDGER_MAX_BODY_READERS`, where the newest
request takes the place of the oldest) and by the read deadline.

When the broker does not confirm (disconnected, blocked, past the deadline, the message
returned), the same message goes to the local spool, and the answer is 200 once it is on disk
(`spool`). After such a failure, and until the broker confirms again (the forwarder's publishes
tell), webhooks go to the spool at once instead of each waiting for the deadline.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from services.ingress.accesslog import WebhookLog
from services.ingress.authentication import SecretCheck
from services.ingress.body import BodyReaders, checked_content_type
from services.ingress.fastparse import parse
from services.ingress.metrics import IngressMetrics
from services.ingress.publisher import Publisher, PublishFailed
from services.ingress.redaction import redact
from services.ingress.refusal import Refusal, error_response, unavailable
from services.ingress.spool import Spool, SpoolFull, SpoolRefused
from shared import envelope
from shared.errors import DecodeError
from shared.settings import Settings
from shared.usedesk import Kind, detect_kind
from shared.usedesk.media import JSON

# A ping without a valid secret is answered like a kept one, but nothing of it exists anywhere.
_PING_NOT_KEPT = b'{"delivery_id":null}'
# Label of requests refused before their kind was known.
NO_KIND = "none"


@dataclass
class IngressState:
    """What the endpoints of one process share."""

    publisher: Publisher | None = None
    spool: Spool | None = None
    # The last publish failed and no confirm came since: webhooks go to the spool at once.
    broker_suspect: bool = False
    draining: bool = False
    # Requests whose body is being read, and requests past it (counted against max_in_flight).
    reading: int = 0
    handling: int = 0

    @property
    def in_flight(self) -> int:
        """Every webhook request being handled now, its body read or not."""
        return self.reading + self.handling

    @property
    def broker_connected(self) -> bool:
        return self.publisher is not None and self.publisher.connected

    @property
    def spool_has_room(self) -> bool:
        return self.spool is not None and self.spool.has_room

    @property
    def ready(self) -> bool:
        """Not draining, and the webhook can be kept: the broker is up or the spool has room."""
        return not self.draining and (self.broker_connected or self.spool_has_room)

    def broker_ok(self, confirmed: bool) -> None:
        self.broker_suspect = not confirmed


class WebhookEndpoint:
    def __init__(
        self,
        settings: Settings,
        state: IngressState,
        metrics: IngressMetrics,
        webhook_log: WebhookLog | None = None,
    ) -> None:
        self._state = state
        self._metrics = metrics
        self._log = webhook_log or WebhookLog(
            "ingress", settings.log_level, settings.log_format, settings.ingress_log_sample
        )
        self._secrets = SecretCheck(settings.secrets, settings.allow_any_secret)
        self._max_bytes = settings.max_body_bytes
        self._read_timeout = settings.read_timeout
        self._max_in_flight = settings.max_in_flight
        self._readers = BodyReaders(settings.max_body_readers)

    async def handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        delivery_id = uuid.uuid4()
        delivery = str(delivery_id)
        # Every line logged while handling it (the publisher's, the spool's) carries it too.
        structlog.contextvars.bind_contextvars(delivery_id=delivery)
        kind = NO_KIND
        try:
            content_type = checked_content_type(request, self._max_bytes)
            body = await self._read(request)
        except Refusal as refusal:
            return self._refused(delivery, kind, refusal, started)
        if self._state.handling >= self._max_in_flight:
            overloaded = unavailable("overloaded", "too many webhooks in flight; retry later")
            return self._refused(delivery, kind, overloaded, started)
        self._state.handling += 1
        try:
            payload = _parse(body, content_type)
            kind = detect_kind(payload)
            response, event, extra = await self._keep(
                delivery_id, kind, body, content_type, payload
            )
        except Refusal as refusal:
            return self._refused(delivery, kind, refusal, started)
        finally:
            self._state.handling -= 1
        self._answered(event, delivery, kind, response.status, started, **extra)
        return response

    async def _read(self, request: web.Request) -> bytes:
        self._state.reading += 1
        try:
            return await self._readers.read(request, self._max_bytes, self._read_timeout)
        finally:
            self._state.reading -= 1

    async def _keep(
        self,
        delivery_id: uuid.UUID,
        kind: Kind,
        body: bytes,
        content_type: str,
        payload: dict[str, Any],
    ) -> tuple[web.Response, str, dict[str, str]]:
        if not self._secrets.accepts(payload):
            if kind == "ping":
                return _json_response(_PING_NOT_KEPT), "webhook_ping_ignored", {}
            raise Refusal(401, "unauthorized", "the secret field is missing or wrong")
        redacted = redact(body, content_type, payload)
        delivery = envelope.accepted(
            kind, redacted.content_type, redacted.body, body, delivery_id=delivery_id
        )
        spooled = await self._publish(delivery)
        answer = _json_response(b'{"delivery_id":"%s"}' % str(delivery_id).encode())
        if spooled is None:
            return answer, "webhook_accepted", {}
        return answer, "webhook_spooled", {"spooled_because": spooled}

    async def _publish(self, delivery: envelope.Delivery) -> str | None:
        """Keep `delivery`: confirmed by the broker (None), or on the spool's disk (why)."""
        state = self._state
        publisher = state.publisher
        spool = state.spool
        if spool is not None and (
            publisher is None or not publisher.connected or (state.broker_suspect and spool.records)
        ):
            why = "the broker is unavailable"
            await self._spool(spool, delivery, why)
            return why
        if publisher is None:
            raise unavailable("broker_unavailable", "the broker connection is not open yet")
        started = time.perf_counter()
        try:
            await publisher.publish_delivery(delivery)
        except PublishFailed as exc:
            if spool is None:
                raise unavailable("broker_unavailable", f"not stored: {exc}") from None
            state.broker_suspect = True
            await self._spool(spool, delivery, str(exc))
            return str(exc)
        finally:
            self._metrics.observe_publish(time.perf_counter() - started)
        if state.broker_suspect:
            state.broker_suspect = False
        return None

    async def _spool(self, spool: Spool, delivery: envelope.Delivery, why: str) -> None:
        try:
            await spool.append(delivery)
        except SpoolRefused as exc:
            if not isinstance(exc, SpoolFull):
                self._metrics.spool_write_failed.inc()
            code = "spool_full" if isinstance(exc, SpoolFull) else "spool_unavailable"
            raise unavailable(code, f"not stored: {why}, and {exc}") from None
        self._metrics.spool_appended.inc()

    def _refused(self, delivery: str, kind: str, refusal: Refusal, started: float) -> web.Response:
        status = refusal.status
        self._answered("webhook_refused", delivery, kind, status, started, error=refusal.code)
        return error_response(refusal)

    def _answered(
        self, event: str, delivery: str, kind: str, status: int, started: float, **extra: str
    ) -> None:
        self._metrics.count(kind, status)
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        self._log.line(event, delivery, kind, status, duration_ms, **extra)


def _parse(body: bytes, content_type: str) -> dict[str, Any]:
    try:
        return parse(body, content_type)
    except DecodeError as exc:
        raise Refusal(400, "bad_body", str(exc)) from None


def _json_response(body: bytes) -> web.Response:
    return web.Response(body=body, content_type=JSON)
