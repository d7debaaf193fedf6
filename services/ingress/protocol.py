"""aiohttp's answers and logs for requests it cannot parse, without a byte of the request.

aiohttp's `RequestHandler.handle_error` logs the parser's exception with its traceback (the
`aiohttp.server` logger: plain text on stderr, outside structlog) and answers it as text/plain.
Both quote the offending bytes, e.g. `Invalid method encountered: b'{"secret": "…'`: a body that
runs past its declared length is read as the next request's head, a broken chunk quotes the chunk
data, a bad header quotes the header. So a mis-framed webhook put its secret into the log and
into the answer.

`QuietRequestHandler` replaces that: one structlog line naming the error class and the status,
and the answer in the ingress's JSON error shape, neither quoting the request. Exceptions that
aiohttp logs elsewhere in the handler go through `log_exception`, which keeps only the class
and where it was raised. The logger aiohttp is given also drops arguments and tracebacks, for
any path this module does not know of.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import structlog
from aiohttp import web

from services.ingress.refusal import Refusal, error_response

log = structlog.get_logger()

MALFORMED_DETAIL = "the request is not well-formed HTTP/1.1 (request line, headers or framing)"
FAILED_DETAIL = "the ingress failed to handle this request; nothing was kept"


class _Scrubbed(logging.Filter):
    """Keep a record's fixed message only: no arguments, no exception text, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.args = None
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


AIOHTTP_LOGGER = logging.getLogger("deskledger.ingress.aiohttp")
AIOHTTP_LOGGER.addFilter(_Scrubbed())


class QuietRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, with errors answered and logged without request bytes."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        failed = status >= 500
        log.warning(
            "http_handler_failed" if failed else "http_request_malformed",
            status=status,
            **_described(exc),
        )
        if request.writer.output_size > 0:
            # Some of an answer went out already: the connection can only be dropped.
            raise ConnectionError("the answer was sent already; the connection is dropped")
        if failed:
            refusal = Refusal(status, "internal_error", FAILED_DETAIL)
        else:
            refusal = Refusal(status, "bad_framing", MALFORMED_DETAIL)
        response = error_response(refusal)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        raised = exc if isinstance(exc, BaseException) else None
        log.error("http_server_error", **_described(raised))

    def log_debug(self, *args: Any, **kw: Any) -> None:
        """aiohttp's debug lines (only with asyncio debug on) may carry exceptions: dropped."""


class QuietServer(web.Server):
    """aiohttp's low-level server, making `QuietRequestHandler`s."""

    def __call__(self) -> web.RequestHandler:
        return QuietRequestHandler(self, loop=self._loop, **self._kwargs)


class IngressRunner(web.AppRunner):
    """`web.AppRunner` whose connections are handled by `QuietRequestHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return QuietServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )


def _described(exc: BaseException | None) -> dict[str, str]:
    """The exception's class and where it was raised: never its message, which may quote bytes."""
    if exc is None:
        return {}
    described = {"error": type(exc).__name__}
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        described["where"] = f"{last.filename}:{last.lineno} in {last.name}"
    return described
