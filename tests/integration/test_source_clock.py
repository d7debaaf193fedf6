"""Saying when the zone is wrong (issue 14): webhooks dated in another zone than the setting.

UseDesk's clock is compared with ours on every recorded comment and change: the worker exports
the median offset and warns naming a zone that fits; `deskledger status` says the same.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from services.status import gather, render
from services.worker import metrics
from shared.clock import fitting_zone
from shared.logging import configure_logging
from shared.settings import Settings
from shared.usedesk import Kind
from tests.helpers.worker import drain, publish


def _comments(zone: str, count: int) -> list[tuple[Kind, bytes]]:
    """Comments written just now, dated by UseDesk's clock in `zone`."""
    now = datetime.now(UTC).astimezone(ZoneInfo(zone))
    bodies: list[tuple[Kind, bytes]] = []
    for n in range(count):
        wall = (now - timedelta(seconds=5 + n % 7)).strftime("%Y-%m-%d %H:%M:%S")
        comment: dict[str, Any] = {"id": 500 + n, "ticket_id": 77, "published_at": wall}
        bodies.append(("comment_created", json.dumps({"comment": comment}).encode()))
    return bodies


@pytest.mark.parametrize(
    ("zone", "wrong"), [("Asia/Yekaterinburg", True), ("Europe/Moscow", False)]
)
async def test_dates_in_another_zone_are_noticed(
    settings: Settings, db: asyncpg.Connection, zone: str, wrong: bool
) -> None:
    stream = io.StringIO()
    configure_logging("test", "info", "json", stream=stream)
    await publish(settings, _comments(zone, 30))  # the setting says Europe/Moscow
    await drain(settings)
    offset = metrics.SOURCE_CLOCK_OFFSET._value.get()
    assert abs(offset - ZoneInfo(zone).utcoffset(datetime.now()).total_seconds()) < 60
    warnings = [
        json.loads(line)
        for line in stream.getvalue().splitlines()
        if "source_timezone_mismatch" in line
    ]
    assert bool(warnings) == wrong
    if wrong:
        assert warnings[0]["fits"] == "Asia/Yekaterinburg"
    report, ok = await gather(settings)
    assert ok
    clock = report["database"]["source_clock"]
    assert clock["wrong"] == wrong
    assert ("disagrees" in render(report)) == wrong


def test_a_zone_is_named_for_every_offset() -> None:
    assert fitting_zone(3 * 3600) == "Europe/Moscow"
    assert fitting_zone(0) == "UTC"
    assert fitting_zone(5.5 * 3600) == "Asia/Kolkata"
    assert fitting_zone(-(3 * 3600 + 1800)) == "UTC-03:30"
