"""The aiohttp `Transport` of `shared.usedesk.api`: one session, JSON bodies, a 30 s deadline.

The token travels in the JSON body only (api.md A8), so neither a URL nor an exception text of
aiohttp (which names the URL) can carry it.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import aiohttp

from shared.usedesk.api import Response

# The documentation's samples use 10 s; a long ticket's history can be large (api.md §3).
TIMEOUT_SECONDS = 30.0


class AiohttpTransport:
    def __init__(self, timeout: float = TIMEOUT_SECONDS) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AiohttpTransport:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout, headers={"Accept": "application/json"}
        )
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(self, url: str, payload: dict[str, Any]) -> Response:
        assert self._session is not None, "use the transport as an async context manager"
        try:
            async with self._session.post(url, json=payload) as response:
                body = await response.read()
                return Response(response.status, body, _seconds(response.headers))
        except aiohttp.ClientError as exc:
            # ClientError is no OSError; the API client retries OSError. Its text names the URL
            # (never the token, which is in the body).
            raise OSError(f"{type(exc).__name__}: {exc}") from None


def _seconds(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
