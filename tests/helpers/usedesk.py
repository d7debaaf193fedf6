"""Decoding UseDesk webhooks in tests: the fixtures, one zone and one receive time."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from shared.events import Event
from shared.usedesk import Kind, decode_webhook

FIXTURES = Path(__file__).parents[1] / "fixtures" / "usedesk"
JSON = "application/json"
MOSCOW = ZoneInfo("Europe/Moscow")
RECEIVED = datetime(2024, 3, 7, 10, 0, tzinfo=UTC)


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return loaded


def decode(
    payload: dict[str, Any] | bytes, content_type: str = JSON, **options: Any
) -> tuple[Kind, Event | None]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    options = {"received_at": RECEIVED, "tz": MOSCOW} | options
    return decode_webhook(body, content_type, **options)


def event(payload: dict[str, Any], **options: Any) -> Any:
    kind, decoded = decode(payload, **options)
    assert decoded is not None, kind
    return decoded


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
