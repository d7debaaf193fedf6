"""`shared.envelope`: a delivery survives the trip through an AMQP message unchanged."""

from __future__ import annotations

import struct
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp.commands import Basic

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


@given(
    content_type=st.text(max_size=300),
    kind=st.sampled_from(["ticket_created", "ping", "unknown"]),
    body_sha256=st.none() | st.text(max_size=80),
    received_at=st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.none()
    ),
    aware=st.booleans(),
)
def test_encoded_properties_are_pamqps_bytes(
    content_type: str, kind: Any, body_sha256: str | None, received_at: datetime, aware: bool
) -> None:
    """The ingress writes the properties' wire form by hand; it must be the bytes pamqp
    marshals, and read back as the same delivery."""
    delivery = Delivery(
        delivery_id=uuid.uuid4(),
        received_at=received_at.replace(tzinfo=UTC) if aware else received_at,
        kind=kind,
        content_type=content_type,
        body=b"{}",
        body_sha256=body_sha256,
    )
    properties = envelope.properties(delivery)
    try:
        expected: bytes | None = properties.marshal()
    except (TypeError, UnicodeEncodeError):
        expected = None
    try:
        encoded = envelope.encoded_properties(delivery)
    except UnicodeEncodeError:
        encoded = None
    if encoded is None:
        # Only what pamqp cannot write either, or an empty content type or one over a short
        # string (the publisher then lets pamqp marshal it, or refuse it).
        assert expected is None or not content_type or len(content_type.encode("utf-8")) > 255
        return
    assert encoded == expected
    read = Basic.Properties()
    read.unmarshal(struct.unpack(">H", encoded[:2])[0], encoded[2:])
    assert envelope.from_message(Incoming(delivery.body, read)) == envelope.from_message(
        Incoming(delivery.body, properties)
    )
