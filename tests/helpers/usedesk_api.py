"""A stand-in for UseDesk's REST API on 127.0.0.1, speaking the shapes of `api.md`.

The sources disagree, so the server comes in variants (`Variant`): `offset` as a record offset,
a page index, or ignored; `comments` at the top level or inside `ticket`; ids and statuses as
numbers or as strings (the 2017 documentation's examples); errors as HTTP 200 bodies with a
`code` (C1) or with an HTTP error status; code 121 (or HTTP 429) on every Nth request.

Its history is built with `create`, `change` and `comment`, each of which returns the webhook
UseDesk would have sent for that fact (same ids, same naive UTC dates), so that a test can
deliver it, lose it, or deliver it late. `silent_status` and `tag` change the ticket's state
without any history entry (what the API cannot tell: the snapshot correction's case).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aiohttp import web

PAGE = 100
DATE = "%Y-%m-%d %H:%M:%S"
COMPANY = 153561


@dataclass
class Variant:
    offset: Literal["record", "page", "ignored"] = "record"
    comments_inside_ticket: bool = False
    string_ids: bool = False
    error_status: int = 200
    rate_limit_every: int = 0
    rate_limit_status: int = 200  # 200 with code 121 in the body, or 429


@dataclass
class Ticket:
    id: int
    subject: str
    status_id: int
    client_id: int
    assignee_id: int | None
    group: int | None
    channel_id: int
    published_at: datetime
    last_updated_at: datetime
    comments: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


def text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(DATE)


class StandIn:
    def __init__(self, token: str, variant: Variant | None = None) -> None:
        self.token = token
        self.variant = variant or Variant()
        self.tickets: dict[int, Ticket] = {}
        self.gone: set[int] = set()
        self.requests: list[tuple[float, str, dict[str, Any]]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    # --- history -------------------------------------------------------------------------------

    def create(
        self, ticket_id: int, at: datetime, status: int = 1, assignee: int | None = None
    ) -> dict[str, Any]:
        ticket = Ticket(
            ticket_id,
            f"Вопрос {ticket_id}",
            status,
            9000 + ticket_id,
            assignee,
            None,
            25222,
            at,
            at,
        )
        self.tickets[ticket_id] = ticket
        return {
            "ticket": {
                "id": ticket_id,
                "status_id": status,
                "subject": ticket.subject,
                "client_id": ticket.client_id,
                "assignee_id": assignee,
                "group": None,
                "channel_id": ticket.channel_id,
                "email": None,
                "published_at": text(at),
                "last_updated_at": text(at),
                "company_id": COMPANY,
            }
        }

    def change(
        self,
        ticket_id: int,
        change_id: int,
        at: datetime,
        status: int | None = None,
        assignee: int | None = None,
    ) -> dict[str, Any]:
        ticket = self.tickets[ticket_id]
        old_status, data = ticket.status_id, []
        if assignee is not None:
            data.append({"target": "assignee_id", "value": str(assignee)})
            ticket.assignee_id = assignee
        if status is not None:
            ticket.status_id = status
        change = {
            "id": change_id,
            "ticket_id": ticket_id,
            "trigger_id": None,
            "user_id": 77,
            "data": data,
            "changed_at": text(at),
            "old_status": old_status if status is not None else 0,
            "new_status": status if status is not None else 0,
            "company_id": COMPANY,
        }
        ticket.changes.append(change)
        ticket.last_updated_at = max(ticket.last_updated_at, at)
        return {"trigger": dict(change)}

    def comment(
        self, ticket_id: int, comment_id: int, at: datetime, author: str = "client"
    ) -> dict[str, Any]:
        ticket = self.tickets[ticket_id]
        comment = {
            "id": comment_id,
            "message": f"<p>Сообщение {comment_id}</p>",
            "type": "public",
            "from": author,
            "user_id": 77 if author == "user" else None,
            "client_id": ticket.client_id if author == "client" else None,
            "ticket_id": ticket_id,
            "is_first": 0 if ticket.comments else 1,
            "delivered": 0,
            "readed": 0,
            "published_at": text(at),
        }
        ticket.comments.append(comment)
        ticket.last_updated_at = max(ticket.last_updated_at, at)
        return {"comment": dict(comment)}

    def silent_status(self, ticket_id: int, status: int, at: datetime) -> None:
        """A state change the API's history does not list."""
        ticket = self.tickets[ticket_id]
        ticket.status_id = status
        ticket.last_updated_at = max(ticket.last_updated_at, at)

    def tag(self, ticket_id: int, *tags: str) -> None:
        self.tickets[ticket_id].tags.extend(tags)

    # --- the API -------------------------------------------------------------------------------

    def _id(self, value: Any) -> Any:
        if value is None or not self.variant.string_ids:
            return value
        return str(value)

    def _ids(self, payload: dict[str, Any]) -> dict[str, Any]:
        keys = ("id", "ticket_id", "client_id", "user_id", "trigger_id", "assignee_id", "group")
        keys += ("status_id", "status", "old_status", "new_status", "company_id", "channel_id")
        keys += ("is_first", "delivered", "readed")
        return {k: self._id(v) if k in keys else v for k, v in payload.items()}

    def summary(self, ticket: Ticket) -> dict[str, Any]:
        return self._ids(
            {
                "id": ticket.id,
                "subject": ticket.subject,
                "status": ticket.status_id,
                "client_id": ticket.client_id,
                "client_name": "Иван Петров",
                "assignee_id": ticket.assignee_id,
                "group": ticket.group,
                "channel_id": ticket.channel_id,
                "created_at": text(ticket.published_at),
                "last_updated_at": text(ticket.last_updated_at),
                "tags": [{"name": t} for t in ticket.tags],
                "priority": "medium",
                "type": "question",
            }
        )

    def full(self, ticket: Ticket) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ticket": self._ids(
                {
                    "id": ticket.id,
                    "status_id": ticket.status_id,
                    "subject": ticket.subject,
                    "client_id": ticket.client_id,
                    "assignee_id": ticket.assignee_id,
                    "group": ticket.group if ticket.group is not None else 0,
                    "last_updated_at": text(ticket.last_updated_at),
                    "email": "0",
                    "published_at": text(ticket.published_at),
                    "company_id": COMPANY,
                    "channel_id": ticket.channel_id,
                }
            ),
            "changes": [self._ids(c) for c in ticket.changes],
            "tags": list(ticket.tags),
            "custom_fields": [],
        }
        comments = [self._ids(c) for c in ticket.comments]
        if self.variant.comments_inside_ticket:
            body["ticket"]["comments"] = comments
        else:
            body["comments"] = comments
        return body

    def _error(self, code: int, message: str, status: int | None = None) -> web.Response:
        return web.json_response(
            {"error": message, "code": code}, status=status or self.variant.error_status
        )

    async def _handle(self, request: web.Request) -> web.Response:
        params: dict[str, Any] = await request.json()
        self.requests.append((time.monotonic(), request.path, params))
        every = self.variant.rate_limit_every
        if every and len(self.requests) % every == 0:
            if self.variant.rate_limit_status == 429:
                return web.json_response({"message": "Too Many Requests"}, status=429)
            return web.json_response({"error": "превышен лимит запросов", "code": 121})
        if params.get("api_token") != self.token:
            return self._error(112, "Неверный API токен", self.variant.error_status)
        if request.path.endswith("/tickets"):
            return web.json_response(self._list(params))
        ticket_id = int(params["ticket_id"])
        if ticket_id in self.gone or ticket_id not in self.tickets:
            return self._error(113, "Неверный ID тикета или нет доступа")
        return web.json_response(self.full(self.tickets[ticket_id]))

    def _list(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        after = params.get("updated_after")
        before = params.get("updated_before")
        chosen = []
        for ticket in sorted(self.tickets.values(), key=lambda t: t.id):
            minute = ticket.last_updated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
            if (after is None or minute >= after) and (before is None or minute <= before):
                chosen.append(self.summary(ticket))
        offset = int(params.get("offset", 0))
        start = {"record": offset, "page": offset * PAGE, "ignored": 0}[self.variant.offset]
        return chosen[start : start + PAGE]

    # --- serving -------------------------------------------------------------------------------

    def calls(self, path_end: str) -> list[dict[str, Any]]:
        return [params for _, path, params in self.requests if path.endswith(path_end)]

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/uapi/tickets", self._handle)
        app.router.add_post("/uapi/ticket", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/uapi"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def history_start(hours_ago: float = 30) -> datetime:
    """A whole second some hours ago (UseDesk's dates have seconds only)."""
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).replace(microsecond=0)


def demo(tickets: int = 230) -> StandIn:
    """A history to backfill from: `offset` as a page index, string ids, comments inside the
    ticket, a rate limit on every 40th request, one ticket gone, one state no history explains."""
    from datetime import timedelta as span

    stand_in = StandIn(
        "demo-usedesk-api-token",
        Variant(offset="page", comments_inside_ticket=True, string_ids=True, rate_limit_every=40),
    )
    start = history_start(hours_ago=72)
    for n in range(tickets):
        ticket_id, at = 5000 + n, start + span(minutes=10 * n)
        stand_in.create(ticket_id, at)
        stand_in.comment(ticket_id, 80_000 + 2 * n, at + span(seconds=30))
        stand_in.comment(ticket_id, 80_001 + 2 * n, at + span(minutes=4), "user")
        stand_in.change(ticket_id, 90_000 + n, at + span(minutes=5), 2, assignee=77)
    stand_in.gone.add(5007)
    stand_in.silent_status(5003, 1, start + span(hours=70))
    return stand_in


async def _serve(port: int) -> None:
    import asyncio

    stand_in = demo()
    app = web.Application()
    app.router.add_post("/uapi/tickets", stand_in._handle)
    app.router.add_post("/uapi/ticket", stand_in._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"UseDesk stand-in at http://127.0.0.1:{port}/uapi, token {stand_in.token}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":  # python -m tests.helpers.usedesk_api PORT
    import asyncio
    import sys

    asyncio.run(_serve(int(sys.argv[1])))
