"""Reading a webhook body cheaply whatever the client sends (I8).

What the headers can refuse is refused before a byte of the body is read: the media type, a
content coding, a declared length over the cap. The body is then read in counted chunks under one
deadline (`DESKLEDGER_READ_TIMEOUT`, from the moment the head was complete), so neither a huge nor
a dribbled body is ever buffered beyond the cap.

Bodies still arriving are bounded apart from the requests that are ready to publish
(`BodyReaders`): a body that is already whole when the handler starts (a webhook's head and body
usually come in one segment, and a buffering load balancer sends them so) takes no place at all.
One still on its way takes one of `DESKLEDGER_MAX_BODY_READERS` places; when they are all taken,
the newcomer takes the place of the *oldest* reader, which is cut off with 408. A real sender's
body arrives within milliseconds, so it is hardly ever the oldest; a client that dribbles its body
is, and can hold its place only until newer requests need it. So slow bodies can neither run the
process out of memory (at most `max_body_readers × max_body_bytes` is buffered) nor lock the
senders out: the newest request always gets a place.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from services.ingress.refusal import Refusal
from shared.usedesk.media import JSON, MULTIPART, URLENCODED

MEDIA_TYPES = (JSON, URLENCODED, MULTIPART)
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


class _Reader:
    """One body being waited for: its deadline, which an eviction moves to now."""

    __slots__ = ("deadline", "evicted")

    def __init__(self) -> None:
        self.deadline: asyncio.Timeout | None = None
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True
        if self.deadline is not None:
            # Fires at the next loop iteration: the read ends with 408.
            self.deadline.reschedule(asyncio.get_running_loop().time())


class BodyReaders:
    """The bodies a process is waiting for, oldest first, at most `limit` of them."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        # Insertion-ordered: the first entry is the oldest reader.
        self._readers: dict[_Reader, None] = {}

    def __len__(self) -> int:
        return len(self._readers)

    def _enter(self, reader: _Reader) -> None:
        while len(self._readers) >= self._limit:
            oldest = next(iter(self._readers))
            del self._readers[oldest]
            oldest.evict()
        self._readers[reader] = None

    def _leave(self, reader: _Reader) -> None:
        self._readers.pop(reader, None)

    async def read(self, request: web.BaseRequest, max_bytes: int, deadline: float) -> bytes:
        """The whole body, at most `max_bytes`, received within `deadline` seconds."""
        if request.content.is_eof():
            # Whole already (it came with the head): nothing to wait for, no place taken.
            return await _read(request, max_bytes)
        reader = _Reader()
        try:
            async with asyncio.timeout(deadline) as reader.deadline:
                self._enter(reader)
                try:
                    return await _read(request, max_bytes)
                finally:
                    self._leave(reader)
        except TimeoutError:
            if reader.evicted:
                detail = "the body was still arriving when newer requests needed its place"
            else:
                detail = f"the body did not arrive within {deadline:g} s"
            raise Refusal(408, "body_timeout", detail, _CLOSE) from None


async def _read(request: web.BaseRequest, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            chunks.append(chunk)
    except web.RequestPayloadError:
        # Not the exception's text: aiohttp's parse errors quote the raw bytes (the secret too).
        raise Refusal(400, "bad_framing", "the body's framing is malformed", _CLOSE) from None
    return b"".join(chunks)


def _too_large(max_bytes: int) -> Refusal:
    return Refusal(413, "too_large", f"the body exceeds {max_bytes} bytes", _CLOSE)
