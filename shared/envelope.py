"""The broker envelope: one accepted webhook as a `Delivery`, and as the AMQP message that
carries it from the ingress (or its spool) to the worker.

`properties` is what the ingress publishes (aiormq's properties), `encoded_properties` the same
already in AMQP's wire form (the ingress's hot path: built by hand, a test holds it to pamqp's
bytes), `message` the same as an aio-pika message (tests, benchmarks), `from_message` the
worker's way back. The message id is the delivery id, so a redelivery, a
forwarded spool record or a retried publish is recognised as the same delivery.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aio_pika
import aiormq

from shared.usedesk import KINDS, Kind
from shared.usedesk.media import JSON

# Headers of every published webhook.
H_KIND = "x-deskledger-kind"
# What the body parses with (the worker reads this); not always what was received.
H_CONTENT_TYPE = "x-deskledger-content-type"
H_RECEIVED_AT = "x-deskledger-received-at"
# A hash of the body as received, which ingresses before issue 14 published: with the redacted
# body beside it, it gives a short secret away to anyone who tries every candidate. The ingress
# sets it no more; a message queued before still carries it, and is read back unchanged.
H_BODY_SHA256 = "x-deskledger-body-sha256"

PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)
# Messages published by something other than our ingress still get a stable id, so that a
# redelivery of the same bytes is recognised.
_FOREIGN_NAMESPACE = uuid.UUID("6f1d4c1e-8f4b-4a53-9a55-6c0a3d3b2f10")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook as the ingress accepted it (secrets already redacted)."""

    delivery_id: uuid.UUID
    received_at: datetime
    kind: Kind
    content_type: str
    body: bytes
    # Only in deliveries accepted before issue 14 (see H_BODY_SHA256); None in every new one.
    body_sha256: str | None = None


class IncomingMessage(Protocol):
    """What `from_message` reads of a consumed message (aio-pika's, or a test's)."""

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Any: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def timestamp(self) -> datetime | None: ...


def accepted(
    kind: Kind,
    content_type: str,
    body: bytes,
    received: bytes,
    delivery_id: uuid.UUID | None = None,
) -> Delivery:
    """A delivery accepted now: `body` (redacted, parsed with `content_type`) of the bytes
    `received`.

    Nothing of `received` is kept, not even a hash: the redacted body is kept beside it, so a
    hash of the original lets anyone who tries every candidate secret find the one that gives
    it back, in under a second for a 5-digit app id (issue 14). No use of such a hash was found that
    would justify a keyed one. `received` stays a parameter for the callers that pass it.
    """
    del received
    return Delivery(
        delivery_id=delivery_id or uuid.uuid4(),
        received_at=datetime.now(UTC),
        kind=kind,
        content_type=content_type,
        body=body,
    )


def _headers(delivery: Delivery) -> dict[str, Any]:
    headers: dict[str, Any] = {
        H_KIND: delivery.kind,
        H_CONTENT_TYPE: delivery.content_type,
        H_RECEIVED_AT: delivery.received_at.isoformat(),
    }
    if delivery.body_sha256 is not None:
        headers[H_BODY_SHA256] = delivery.body_sha256
    return headers


def properties(delivery: Delivery) -> aiormq.spec.Basic.Properties:
    """The AMQP properties `delivery` is published with (its body is the message body)."""
    return aiormq.spec.Basic.Properties(
        delivery_mode=PERSISTENT,
        message_id=str(delivery.delivery_id),
        content_type=delivery.content_type,
        timestamp=delivery.received_at,
        headers=_headers(delivery),
    )


# Basic's property flags (AMQP 0-9-1), in the order the properties follow them on the wire.
_CONTENT_TYPE, _HEADERS, _DELIVERY_MODE, _MESSAGE_ID, _TIMESTAMP = (
    0x8000,
    0x2000,
    0x1000,
    0x0080,
    0x0040,
)
_FLAGS = struct.pack(">H", _CONTENT_TYPE | _HEADERS | _DELIVERY_MODE | _MESSAGE_ID | _TIMESTAMP)
_PERSISTENT_OCTET = bytes([PERSISTENT])
_SHORT_MAX = 255


def _short(text: str) -> bytes | None:
    data = text.encode("utf-8")
    return bytes([len(data)]) + data if len(data) <= _SHORT_MAX else None


def _field(name: str, value: str) -> bytes:
    # A table entry: the name (a short string) and a long string ("S") value.
    data = value.encode("utf-8")
    return bytes([len(name)]) + name.encode() + b"S" + struct.pack(">I", len(data)) + data


def encoded_properties(delivery: Delivery) -> bytes | None:
    """`properties(delivery)` as the property flags and list of a content header frame, exactly
    the bytes pamqp marshals; None for a content type that is empty or longer than a short
    string (for pamqp to marshal, or refuse)."""
    # pamqp leaves an empty content type out (its flag unset): let it marshal that one.
    content_type = _short(delivery.content_type) if delivery.content_type else None
    if content_type is None:
        return None
    # Table entries sorted by name, as pamqp writes them.
    headers = _headers(delivery)
    table = b"".join(_field(name, headers[name]) for name in sorted(headers))
    message_id = str(delivery.delivery_id)
    return b"".join(
        (
            _FLAGS,
            content_type,
            struct.pack(">I", len(table)),
            table,
            _PERSISTENT_OCTET,
            bytes([len(message_id)]),
            message_id.encode(),
            struct.pack(">Q", int(_aware(delivery.received_at).timestamp())),
        )
    )


def _aware(moment: datetime) -> datetime:
    # pamqp reads a naive timestamp as UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def message(delivery: Delivery) -> aio_pika.Message:
    """`delivery` as an aio-pika message, with the same properties as `properties`."""
    return aio_pika.Message(
        delivery.body,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(delivery.delivery_id),
        content_type=delivery.content_type,
        timestamp=delivery.received_at,
        headers=_headers(delivery),
    )


def from_message(incoming: IncomingMessage) -> Delivery:
    """The delivery a consumed message carries; never raises, whoever published it."""
    headers: dict[str, Any] = dict(incoming.headers or {})
    kind_text = _text(headers, H_KIND)
    kind: Kind = kind_text if kind_text in KINDS else "unknown"
    return Delivery(
        delivery_id=_delivery_id(incoming),
        received_at=_received_at(incoming, headers),
        kind=kind,
        content_type=_text(headers, H_CONTENT_TYPE) or _clean(incoming.content_type) or JSON,
        body=incoming.body,
        body_sha256=_text(headers, H_BODY_SHA256),
    )


def _clean(value: str | None) -> str | None:
    # A header of a foreign publisher lands in a text column, which cannot hold U+0000.
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value


def _text(headers: dict[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return _clean(value) if isinstance(value, str) else None


def _delivery_id(incoming: IncomingMessage) -> uuid.UUID:
    try:
        return uuid.UUID(incoming.message_id or "")
    except ValueError:
        return uuid.uuid5(_FOREIGN_NAMESPACE, hashlib.sha256(incoming.body).hexdigest())


def _received_at(incoming: IncomingMessage, headers: dict[str, Any]) -> datetime:
    text = _text(headers, H_RECEIVED_AT)
    if text:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    stamp = incoming.timestamp
    if stamp is not None:
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return datetime.now(UTC)
