"""Reading a webhook body cheaply whatever the client sends (I8).

What the headers can refuse is refused before a byte of the body is read: the media type, a
content coding, a declared length over the cap. The body is then read in counted chunks under one
deadline, so neither a huge nor a dribbled body is ever buffered beyond the cap.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.ingress.refusal import Refusal
from shared.forms import MULTIPART, URLENCODED
from shared.usedesk import JSON_CONTENT_TYPE

MEDIA_TYPES = (JSON_CONTENT_TYPE, URLENCODED, MULTIPART)
# A refused body may still be on its way; the client must not reuse the connection.
_CLOSE = {"Connection": "close"}


def checked_content_type(request: web.BaseRequest, max_bytes: int) -> str:
    """The request's full `Content-Type` (with its parameters) once the headers are acceptable."""
    if request.content_type not in MEDIA_TYPES:
        raise Refusal(
            415,
            "unsupported_media_type",
            f"expected Content-Type {', '.join(MEDIA_TYPES)}; got {request.content_type}",
        )
    # Decompressing is where a small body becomes a huge one; UseDesk does not compress.
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding != "identity":
        raise Refusal(
            415, "unsupported_content_encoding", f"expected no Content-Encoding; got {coding}"
        )
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        raise _too_large(max_bytes)
    return request.headers["Content-Type"]


async def read_body(request: web.BaseRequest, max_bytes: int, deadline: float) -> bytes:
    """The whole body, at most `max_bytes`, received within `deadline` seconds."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                chunks.append(chunk)
    except TimeoutError:
        raise Refusal(
            408, "body_timeout", f"the body did not arrive within {deadline:g} s", _CLOSE
        ) from None
    except web.RequestPayloadError as exc:
        raise Refusal(400, "bad_framing", f"the body is malformed: {exc}", _CLOSE) from None
    return b"".join(chunks)


def _too_large(max_bytes: int) -> Refusal:
    return Refusal(413, "too_large", f"the body exceeds {max_bytes} bytes", _CLOSE)
