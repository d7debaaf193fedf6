"""Error answers: one exception carrying the status, and the JSON body every error shares."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from aiohttp import web

# Long enough for a broker restart or a load spike to pass, short enough to keep UseDesk's queue.
RETRY_AFTER_SECONDS = "5"


class Refusal(Exception):
    """A webhook the ingress does not take; answered with `status` and `{"error", "detail"}`."""

    def __init__(
        self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers


def unavailable(code: str, detail: str) -> Refusal:
    """503 with `Retry-After`: nothing was kept, the sender should try again."""
    return Refusal(503, code, detail, {"Retry-After": RETRY_AFTER_SECONDS})


def error_response(refusal: Refusal) -> web.Response:
    return web.Response(
        status=refusal.status,
        body=msgspec.json.encode({"error": refusal.code, "detail": refusal.detail}),
        content_type="application/json",
        headers=refusal.headers,
    )
