"""`shared.envelope`: a delivery survives the trip through an AMQP message unchanged."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from shared import envelope
from shared.envelope import Delivery


class Incoming:
    """What the worker receives, built from what the ingress publishes."""

    def __init__(self, body: bytes, properties: Any) -> None:
        self.body = body
        self.headers = properties.headers
        self.message_id = properties.message_id
        self.content_type = properties.content_type
        self.timestamp = properties.timestamp


DELIVERY = Delivery(
    delivery_id=uuid.uuid4(),
    received_at=datetime(2024, 3, 5, 9, 0, 1, 123456, tzinfo=UTC),
    kind="ticket_changed",
    content_type="application/x-www-form-urlencoded",
    body=b"trigger[id]=1&secret=%5Bredacted%5D",
    body_sha256="ab" * 32,
)


def test_a_delivery_round_trips_through_the_ingress_properties() -> None:
    properties = envelope.properties(DELIVERY)
    assert properties.delivery_mode == 2  # persistent
    assert envelope.from_message(Incoming(DELIVERY.body, properties)) == DELIVERY


def test_the_aio_pika_message_carries_the_same_properties() -> None:
    message = envelope.message(DELIVERY)
    assert envelope.from_message(message) == DELIVERY
    assert message.headers == envelope.properties(DELIVERY).headers


@pytest.mark.parametrize(
    ("headers", "message_id"),
    [({}, None), ({envelope.H_KIND: b"bogus", envelope.H_RECEIVED_AT: "yesterday"}, "x")],
)
def test_a_foreign_message_still_becomes_a_delivery_with_a_stable_id(
    headers: dict[str, Any], message_id: str | None
) -> None:
    class Foreign:
        body = b'{"ping": 1}'
        content_type = "application/json\x00"
        timestamp = None

    Foreign.headers = headers  # type: ignore[attr-defined]
    Foreign.message_id = message_id  # type: ignore[attr-defined]
    first = envelope.from_message(Foreign())  # type: ignore[arg-type]
    again = envelope.from_message(Foreign())  # type: ignore[arg-type]
    assert first.delivery_id == again.delivery_id
    assert first.kind == "unknown"
    assert first.content_type == "application/json\ufffd"  # a text column cannot hold U+0000
