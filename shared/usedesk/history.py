"""A ticket as `POST /ticket` returns it, rewritten as the webhooks that would have told it.

api.md §5.1: the API's ids are the webhooks' ids (`ticket.id`; `changes[].id` is the change
webhook's `trigger.id`, the same `Trigger` shape; `comments[].id` is `comment.id`), so a fact
rebuilt here has the key its webhook would have had, and whichever arrives first is the one
stored. Each fact is a webhook-shaped payload (`{"ticket": …}`, `{"trigger": …}`,
`{"comment": …}`) for the webhook builders, with two rewrites only:

- dates: the API's are UTC (api.md §4, A1), so "2024-03-05 09:04:18" becomes
  "2024-03-05T09:04:18+00:00", which the date reader takes as an instant whatever
  `DESKLEDGER_SOURCE_TIMEZONE` says; PHP's "0000-00-00 00:00:00" becomes null;
- the creation: the API gives the ticket's *current* status, assignee, group and subject
  (§5.2), which the creation webhook would not have had. Where a change touched one of them,
  the creation gets the value before the first such change when the API tells it
  (`old_status`, `old_value`), else none; otherwise the current value is the initial one.

`comments` may sit at the top level or inside `ticket` (§2.3, both read); ids and statuses may
be numbers or numeric strings (read as either).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_NAIVE_DATE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?")
_DATE_KEYS = ("published_at", "last_updated_at", "changed_at", "created_at")
# Targets of `changes[].data[]` that set a field of the ticket, by the ticket field they set
# (`assignee` in the API's example, `assignee_id` in webhooks: §2.3).
_TARGETS = {
    "assignee": "assignee_id",
    "assignee_id": "assignee_id",
    "group": "group",
    "group_id": "group",
    "subject": "subject",
    "status_id": "status_id",
}


@dataclass(frozen=True)
class Snapshot:
    """The ticket's current state as the API reported it (None: not reported)."""

    ticket_id: int
    last_updated_at: str | None
    status_id: int | None
    subject: str | None
    client_id: int | None
    assignee_id: int | None
    group_id: int | None
    channel_id: int | None
    company_id: int | None
    tags: tuple[str, ...] | None
    # The highest `changes[].id`: the state reported is the one after that change.
    last_change_id: int | None
    raw: dict[str, Any]


@dataclass(frozen=True)
class TicketHistory:
    ticket_id: int
    created: dict[str, Any]
    changes: list[dict[str, Any]]
    comments: list[dict[str, Any]]
    snapshot: Snapshot


def as_int(value: Any) -> int | None:
    """An id or status as sent (int, numeric string, null, "", 0) as an int; 0 is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value or None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value) or None
    return None


def utc_date(value: Any) -> Any:
    """An API date as ISO text with an explicit UTC offset (see the module doc)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text or text.startswith("0000-00-00"):
        return None
    if _NAIVE_DATE.fullmatch(text):
        date, _, time = text.replace("T", " ").partition(" ")
        seconds = "" if time.count(":") == 2 else ":00"
        return f"{date}T{time}{seconds}+00:00"
    return text


def _dated(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: utc_date(v) if k in _DATE_KEYS else v for k, v in payload.items()}


def _objects(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        value = list(value.values())
    return [item for item in value or () if isinstance(item, dict)]


def _comments(answer: dict[str, Any], ticket: dict[str, Any]) -> list[dict[str, Any]]:
    found: dict[Any, dict[str, Any]] = {}
    for comment in _objects(answer.get("comments")) + _objects(ticket.get("comments")):
        found.setdefault(as_int(comment.get("id")) or id(comment), comment)
    return list(found.values())


def _order(change: dict[str, Any]) -> tuple[str, int]:
    return str(utc_date(change.get("changed_at")) or ""), as_int(change.get("id")) or 0


def _initial(ticket: dict[str, Any], changes: list[dict[str, Any]]) -> dict[str, Any]:
    """The creation's status, assignee, group and subject (see the module doc)."""
    initial: dict[str, Any] = {}
    for change in sorted(changes, key=_order):
        old_status = as_int(change.get("old_status"))
        if old_status is not None and as_int(change.get("new_status")) is not None:
            initial.setdefault("status_id", old_status)
        for entry in _objects(change.get("data")):
            field = _TARGETS.get(str(entry.get("target")))
            if field is not None:
                initial.setdefault(field, entry.get("old_value"))
    return {
        field: initial.get(field, ticket.get(field))
        for field in ("status_id", "assignee_id", "group", "subject")
    }


def _tags(answer: dict[str, Any], ticket: dict[str, Any]) -> tuple[str, ...] | None:
    raw = answer.get("tags", ticket.get("tags"))
    if raw is None:
        return None
    if isinstance(raw, dict):
        raw = list(raw.values())
    names = (t.get("name") if isinstance(t, dict) else t for t in raw or ())
    return tuple(sorted({str(name).strip() for name in names if name not in (None, "")}))


def _snapshot(
    ticket_id: int, answer: dict[str, Any], ticket: dict[str, Any], changes: list[dict[str, Any]]
) -> Snapshot:
    raw = {k: v for k, v in ticket.items() if k != "comments"}
    if "tags" in answer:
        raw["tags"] = answer["tags"]
    last = ticket.get("last_updated_at")
    return Snapshot(
        ticket_id=ticket_id,
        last_updated_at=last if isinstance(last, str) and last else None,
        status_id=as_int(ticket.get("status_id", ticket.get("status"))),
        subject=ticket.get("subject") if isinstance(ticket.get("subject"), str) else None,
        client_id=as_int(ticket.get("client_id")),
        assignee_id=as_int(ticket.get("assignee_id")),
        group_id=as_int(ticket.get("group")),
        channel_id=as_int(ticket.get("channel_id")),
        company_id=as_int(ticket.get("company_id")),
        tags=_tags(answer, ticket),
        last_change_id=max((as_int(c.get("id")) or 0 for c in changes), default=0) or None,
        raw=raw,
    )


def ticket_history(answer: dict[str, Any]) -> TicketHistory:
    """Every fact of one `POST /ticket` answer, webhook-shaped (see the module doc)."""
    ticket: dict[str, Any] = answer["ticket"]
    ticket_id = as_int(ticket.get("id"))
    if ticket_id is None:
        raise ValueError("the API's ticket has no id")
    changes = [
        {**change, "ticket_id": change.get("ticket_id") or ticket_id}
        for change in _objects(answer.get("changes"))
    ]
    created = {k: v for k, v in ticket.items() if k not in ("comments", "tags")}
    created.update(_initial(ticket, changes))
    # The creation as it happened: its "last update" is the creation itself.
    created["last_updated_at"] = ticket.get("published_at")
    comments = [
        {**comment, "ticket_id": comment.get("ticket_id") or ticket_id}
        for comment in _comments(answer, ticket)
    ]
    return TicketHistory(
        ticket_id=ticket_id,
        created={"ticket": _dated(created)},
        changes=[{"trigger": _dated(change)} for change in sorted(changes, key=_order)],
        comments=[{"comment": _dated(comment)} for comment in comments],
        snapshot=_snapshot(ticket_id, answer, ticket, changes),
    )
