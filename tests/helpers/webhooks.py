"""Generated UseDesk webhooks with unique natural ids, as the fault driver sends them.

Each webhook carries the test secret and one fact whose `(type, source_id)` is known in advance:
a ticket's creation (its id), a change (`trigger.id`) or a comment (`comment.id`). Timestamps go
forwards by the index but the driver's retries scramble arrival order, which the projections
must not notice (I5). Every fifth webhook is sent as a PHP-style urlencoded form, UseDesk's
non-JSON mode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from tests.helpers.secret import TEST_SECRET

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
TICKET_BASE = 9_000_000
CHANGE_BASE = 50_000_000
COMMENT_BASE = 70_000_000
_START = datetime(2024, 3, 5, 9, 0, 0)

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Webhook:
    index: int
    key: Key  # (event type, source_id): what the store must hold exactly once
    body: bytes
    content_type: str


def _when(index: int) -> str:
    return (_START + timedelta(seconds=index)).strftime("%Y-%m-%d %H:%M:%S")


def _created(index: int, ticket_id: int) -> dict[str, Any]:
    return {
        "ticket": {
            "id": str(ticket_id),
            "status_id": "1",
            "subject": f"Заявка {ticket_id}",
            "client_id": str(1000 + ticket_id % 97),
            "channel_id": "58213",
            "email": f"client{ticket_id}@example.org",
            "published_at": _when(index),
            "last_updated_at": _when(index),
            "company_id": "160442",
            "custom_fields": [{"id": 61, "name": "Order", "value": f"A-{ticket_id}"}],
            "custom_blocks": [{"name": "CRM", "url": "https://crm.example.org", "secret_key": "k"}],
        }
    }


def _changed(index: int, ticket_id: int, number: int) -> dict[str, Any]:
    # The ticket's `number`-th change: statuses chain 1 -> 2 -> 3 -> 1 from its creation (1).
    old, new = 1 + number % 3, 1 + (number + 1) % 3
    return {
        "trigger": {
            "id": CHANGE_BASE + index,
            "user_id": 48211,
            "ticket_id": ticket_id,
            "data": [
                {"target": "status_id", "value": str(new), "old_value": str(old)},
                {"target": "assignee_id", "value": str(40 + index % 5), "old_value": None},
            ],
            "changed_at": _when(index),
            "old_status": old,
            "new_status": new,
            "company_id": 160442,
        }
    }


def _comment(index: int, ticket_id: int) -> dict[str, Any]:
    return {
        "comment": {
            "id": COMMENT_BASE + index,
            "message": f"<p>Ответ {index}</p>",
            "type": "public",
            "from": "user" if index % 2 else "client",
            "user_id": 48211,
            "client_id": 1000 + ticket_id % 97,
            "ticket_id": ticket_id,
            "published_at": _when(index),
        }
    }


def _payload(index: int, tickets: int, changes: dict[int, int]) -> tuple[Key, dict[str, Any]]:
    ticket_id = TICKET_BASE + index % tickets
    if index < tickets:
        return ("ticket_created", str(ticket_id)), _created(index, ticket_id)
    if (index // tickets) % 2:  # rounds over every ticket, changes and comments in turn
        number = changes[ticket_id] = changes.get(ticket_id, -1) + 1
        return ("ticket_changed", str(CHANGE_BASE + index)), _changed(index, ticket_id, number)
    return ("comment_created", str(COMMENT_BASE + index)), _comment(index, ticket_id)


def php_form(payload: dict[str, Any]) -> bytes:
    """`http_build_query` of a nested array: `ticket[custom_fields][0][id]=61`; nulls omitted."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}[{key}]" if prefix else str(key), item)
        elif isinstance(value, list):
            for position, item in enumerate(value):
                walk(f"{prefix}[{position}]", item)
        elif value is not None:
            pairs.append((prefix, str(value)))

    walk("", payload)
    return urlencode(pairs).encode()


def generate(
    count: int, tickets: int = 20, secret: str = TEST_SECRET, start: int = 0
) -> list[Webhook]:
    """`count` webhooks about `tickets` tickets: first each creation, then changes and comments.

    `start` continues a series: `generate(100, start=100)` are the next hundred facts.
    """
    webhooks = []
    changes: dict[int, int] = {}
    for index in range(start, start + count):
        key, payload = _payload(index, tickets, changes)
        payload = {"secret": secret, **payload}
        if index % 5 == 4:
            body, content_type = php_form(payload), FORM
        else:
            body, content_type = json.dumps(payload, ensure_ascii=False).encode(), JSON
        webhooks.append(Webhook(index, key, body, content_type))
    return webhooks
