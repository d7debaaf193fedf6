"""Logging: JSON lines with the required keys, context variables, secrets masked at any depth."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from shared.logging import configure_logging


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("testsvc", "info", "json", stream=out)
    yield out
    structlog.contextvars.clear_contextvars()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_timestamp_level_event_service(stream: io.StringIO) -> None:
    structlog.get_logger().info("webhook_accepted", kind="ping")
    (line,) = _lines(stream)
    assert line["event"] == "webhook_accepted"
    assert line["level"] == "info"
    assert line["service"] == "testsvc"
    assert str(line["timestamp"]).endswith("Z")


def test_context_variables_trace_a_delivery(stream: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(delivery_id="d-1", ticket_id=7)
    structlog.get_logger().info("event_recorded")
    (line,) = _lines(stream)
    assert (line["delivery_id"], line["ticket_id"]) == ("d-1", 7)


def test_secrets_are_masked_in_nested_dicts(stream: io.StringIO) -> None:
    structlog.get_logger().warning(
        "odd_payload",
        secret="top-level-secret",
        payload={
            "secret": "nested-secret",
            "custom_blocks": [{"name": "crm", "secret_key": "block-key"}],
            "deeper": {"list": [{"x": {"secret_key": "deep-key"}}]},
        },
    )
    text = stream.getvalue()
    for value in ("top-level-secret", "nested-secret", "block-key", "deep-key"):
        assert value not in text
    (line,) = _lines(stream)
    assert line["secret"] == "***"
    assert line["payload"]["custom_blocks"][0] == {"name": "crm", "secret_key": "***"}  # type: ignore[index]


def test_level_filter_drops_debug(stream: io.StringIO) -> None:
    structlog.get_logger().debug("noise")
    assert stream.getvalue() == ""
