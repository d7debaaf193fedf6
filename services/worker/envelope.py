"""From a RabbitMQ message (as the ingress published it) to a `Delivery`."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from shared.broker import H_BODY_SHA256, H_CONTENT_TYPE, H_KIND, H_RECEIVED_AT
from shared.recording import Delivery
from shared.usedesk import KINDS, Kind

# Messages published by something other than our ingress still get a stable id, so that a
# redelivery of the same bytes is recognised.
_FOREIGN_NAMESPACE = uuid.UUID("6f1d4c1e-8f4b-4a53-9a55-6c0a3d3b2f10")


def _text(headers: dict[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    # A header of a foreign publisher lands in a text column, which cannot hold U+0000.
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _delivery_id(message: AbstractIncomingMessage) -> uuid.UUID:
    try:
        return uuid.UUID(message.message_id or "")
    except ValueError:
        return uuid.uuid5(_FOREIGN_NAMESPACE, hashlib.sha256(message.body).hexdigest())


def _received_at(message: AbstractIncomingMessage, headers: dict[str, Any]) -> datetime:
    text = _text(headers, H_RECEIVED_AT)
    if text:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    stamp = message.timestamp
    if stamp is not None:
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return datetime.now(UTC)


def to_delivery(message: AbstractIncomingMessage) -> Delivery:
    headers: dict[str, Any] = dict(message.headers or {})
    kind_text = _text(headers, H_KIND)
    kind: Kind = kind_text if kind_text in KINDS else "unknown"
    content_type = _text(headers, H_CONTENT_TYPE) or message.content_type or "application/json"
    return Delivery(
        delivery_id=_delivery_id(message),
        received_at=_received_at(message, headers),
        kind=kind,
        content_type=content_type,
        body=message.body,
        body_sha256=_text(headers, H_BODY_SHA256),
    )
