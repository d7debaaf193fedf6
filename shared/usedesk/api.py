"""UseDesk's REST API, as `deskledger reconcile` reads it: `POST /tickets` and `POST /ticket`.

Everything here follows `api.md` (the research note on the API), whose unknowns are handled at
run time rather than assumed:

- every request is a POST with a JSON body that carries `api_token` (A8: the token goes in the
  body, so it never sits in a URL, a proxy log or an error message of ours);
- an error may come with any HTTP status, as `{"error" | "message": text, "code": n}` (C1, C3,
  C6): a non-2xx status, or an object with `error`, or an integer `code` where a list or a
  ticket was expected, is an error;
- codes 112 and 115 (bad token, no access) stop the run (`ApiRefused`); 113 (no such ticket,
  merged, no access to it) is an answer, `Gone`, never retried; 121 (request limit), 111
  (server error), HTTP 429, 5xx and network failures are retried with exponential backoff and
  jitter, honouring `Retry-After` should it ever appear; any other code is `ApiFailed`;
- requests are paced to `rate` per second (a token bucket with a burst of 1), whatever the
  retries.

HTTP itself is a `Transport` the caller gives (`shared` never imports aiohttp): the
reconcile service's aiohttp one, or a test's.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import structlog

from shared.errors import DeskLedgerError

log = structlog.get_logger()

PAGE_SIZE = 100  # "a response holds at most 100 records" (A2, A3, A5)
CODE_SERVER_ERROR = 111
CODE_BAD_TOKEN = 112
CODE_GONE = 113
CODE_NO_ACCESS = 115
CODE_RATE_LIMIT = 121
_RETRIED_CODES = frozenset({CODE_SERVER_ERROR, CODE_RATE_LIMIT})
_REFUSING_CODES = frozenset({CODE_BAD_TOKEN, CODE_NO_ACCESS})
_JSON = msgspec.json.Decoder()


class ApiError(DeskLedgerError):
    """UseDesk's API did not give what was asked."""


class ApiRefused(ApiError):
    """UseDesk refused the token or its access (code 112 or 115, HTTP 401/403): check
    USEDESK_API_TOKEN (the API channel's token) and USEDESK_API_URL."""


class ApiFailed(ApiError):
    """An answer that retrying will not change, or retries that ran out."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    retry_after: float | None = None


class Transport(Protocol):
    """POST `payload` as JSON to `url`; raises `OSError` or `TimeoutError` on network failure."""

    async def post(self, url: str, payload: dict[str, Any]) -> Response: ...


@dataclass(frozen=True, slots=True)
class Gone:
    """Code 113: the ticket is deleted, merged or out of the token's reach."""

    ticket_id: int
    reason: str


@dataclass(frozen=True)
class Backoff:
    """Exponential, capped, with full jitter on its upper half (api.md §3: 5 s → 5 min)."""

    base: float = 5.0
    cap: float = 300.0
    attempts: int = 8

    def delay(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self.cap, self.base * 2.0**attempt)
        jittered = ceiling * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto
        return max(jittered, retry_after or 0.0)


class _Retry(Exception):
    def __init__(self, why: str, retry_after: float | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.retry_after = retry_after


class Pacer:
    """At most `rate` request starts per second, burst 1."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0

    async def wait(self) -> None:
        now = self._clock()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await self._sleep(start - now)


class UseDeskApi:
    """The two read methods reconciliation needs, paced and retried (see the module doc)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        transport: Transport,
        *,
        rate: float,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._transport = transport
        self._pacer = Pacer(rate, sleep=sleep)
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self.calls = 0
        self.retries = 0

    def __repr__(self) -> str:
        return f"UseDeskApi({self._base!r}, token=***)"

    async def list_tickets(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        """One page of `POST /tickets` (at most `PAGE_SIZE` summaries)."""
        answer = await self._call("tickets", filters)
        if isinstance(answer, dict):
            # Some PHP encoders send a list with holes as an object keyed by index.
            answer = list(answer.values())
        if not isinstance(answer, list) or not all(isinstance(i, dict) for i in answer):
            raise ApiFailed(f"POST {self._base}/tickets: expected a list of tickets")
        return answer

    async def ticket(self, ticket_id: int) -> dict[str, Any] | Gone:
        """`POST /ticket`: the ticket, its comments and its changes; `Gone` on code 113."""
        try:
            answer = await self._call("ticket", {"ticket_id": ticket_id})
        except _GoneError as exc:
            return Gone(ticket_id, exc.reason)
        if not isinstance(answer, dict) or not isinstance(answer.get("ticket"), dict):
            raise ApiFailed(f"POST {self._base}/ticket {ticket_id}: expected a ticket object")
        return answer

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        url = f"{self._base}/{method}"
        for attempt in range(self._backoff.attempts):
            await self._pacer.wait()
            self.calls += 1
            try:
                return await self._once(url, params)
            except _Retry as retry:
                self.retries += 1
                delay = self._backoff.delay(attempt, retry.retry_after)
                log.warning(
                    "usedesk_api_retry",
                    method=method,
                    reason=retry.why,
                    attempt=attempt + 1,
                    delay_s=round(delay, 2),
                )
                await self._sleep(delay)
        raise ApiFailed(
            f"POST {url}: still failing after {self._backoff.attempts} attempts; "
            "UseDesk may be down or rate-limiting: run reconcile again later"
        )

    async def _once(self, url: str, params: dict[str, Any]) -> Any:
        try:
            response = await self._transport.post(url, {**params, "api_token": self._token})
        except (OSError, TimeoutError) as exc:
            raise _Retry(f"network: {type(exc).__name__}") from None
        return self._read(url, response)

    def _read(self, url: str, response: Response) -> Any:
        try:
            answer = _JSON.decode(response.body) if response.body.strip() else None
        except msgspec.DecodeError:
            answer = None
        code, text = _error_of(answer)
        if text is not None and self._token:
            text = text.replace(self._token, "***")  # an error that echoes the token
        status = response.status
        if status == 429 or status >= 500 or code in _RETRIED_CODES:
            why = f"HTTP {status}" + (f", code {code}" if code is not None else "")
            raise _Retry(why, response.retry_after)
        if code in _REFUSING_CODES or status in (401, 403):
            detail = f"code {code}" if code is not None else f"HTTP {status}"
            raise ApiRefused(
                f"UseDesk refused the API token ({detail}{_quoted(text)}) at {url}: check "
                "USEDESK_API_TOKEN (the API channel's token) and USEDESK_API_URL"
            )
        if code == CODE_GONE:
            raise _GoneError(f"code {code}{_quoted(text)}")
        if code is not None or text is not None or not 200 <= status < 300:
            detail = f"code {code}" if code is not None else f"HTTP {status}"
            raise ApiFailed(f"POST {url}: UseDesk answered an error ({detail}{_quoted(text)})")
        if answer is None:
            raise ApiFailed(f"POST {url}: UseDesk answered HTTP {status} with no JSON")
        return answer


class _GoneError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _error_of(answer: Any) -> tuple[int | None, str | None]:
    """(code, text) of an error object; (None, None) for anything else."""
    if not isinstance(answer, dict) or "ticket" in answer:
        return None, None
    code = _int(answer.get("code"))
    text = answer.get("error")
    if text is None and code is not None:
        text = answer.get("message")
    if text is not None and not isinstance(text, str):
        text = msgspec.json.encode(text).decode()
    return code, text


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _quoted(text: str | None) -> str:
    return f": {text[:200]!r}" if text else ""
