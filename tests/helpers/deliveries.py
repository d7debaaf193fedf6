"""Building `Delivery` objects for tests without going through the broker."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from shared.envelope import Delivery
from shared.recording import Decoded, decode
from shared.usedesk import Kind, detect_kind

FIXTURES = Path(__file__).parent.parent / "fixtures" / "usedesk"
MOSCOW = ZoneInfo("Europe/Moscow")
RECEIVED = datetime(2024, 3, 5, 12, 0, tzinfo=UTC)


def delivery(payload: dict[str, Any] | bytes, delivery_id: uuid.UUID | None = None) -> Delivery:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        kind = detect_kind(json.loads(body))
    except ValueError:
        kind = "unknown"
    return Delivery(
        delivery_id=delivery_id or uuid.uuid4(),
        received_at=RECEIVED,
        kind=kind,
        content_type="application/json",
        body=body,
    )


def decoded(payload: dict[str, Any] | bytes, delivery_id: uuid.UUID | None = None) -> Decoded:
    return decode(delivery(payload, delivery_id), MOSCOW, None)


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


STORY = ("ticket_created.json", "comment_created.json", "ticket_changed.json", "rating.json")


STORY_KINDS: dict[str, Kind] = {
    "ticket_created.json": "ticket_created",
    "comment_created.json": "comment_created",
    "ticket_changed.json": "ticket_changed",
    "rating.json": "rating",
}


def story_bodies() -> list[tuple[Kind, bytes]]:
    """The fixture story as (kind, JSON body) pairs, in the order it happened."""
    return [(STORY_KINDS[name], json.dumps(fixture(name)).encode()) for name in STORY]
