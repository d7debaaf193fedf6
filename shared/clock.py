"""Is `DESKLEDGER_SOURCE_TIMEZONE` right? UseDesk's clock against ours (docs/semantics.md).

UseDesk's dates carry no zone, and which zone they are in is undocumented. Comments and changes
reach us seconds after they happen, so UseDesk's wall time read as if it were UTC, minus our
receive time, is the zone's UTC offset (plus a few seconds). The median of that over recent
webhooks is robust to the odd late delivery (a spool drained after an outage, a retry).

The worker keeps a `ClockWatch` over the events it records (the metric
`deskledger_source_clock_offset_seconds` and a `source_timezone_mismatch` warning);
`deskledger status` asks the store the same question (`observed_offset`).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.db import Conn
from shared.events import CommentCreated, Event, TicketChanged

WINDOW = 200  # recent samples the median is taken over
MIN_SAMPLES = 20  # fewer say nothing
TOLERANCE = 15 * 60  # seconds between the observed and the configured offset before a warning
_DOCUMENTED_DATE_CHARS = len("2024-03-05 11:52:40")
# Zones offered when the observed offset disagrees with the setting, first match wins.
CANDIDATE_ZONES = (
    "Europe/Moscow",
    "UTC",
    "Europe/Kaliningrad",
    "Europe/Samara",
    "Asia/Yekaterinburg",
    "Asia/Omsk",
    "Asia/Novosibirsk",
    "Asia/Krasnoyarsk",
    "Asia/Irkutsk",
    "Asia/Yakutsk",
    "Asia/Vladivostok",
    "Asia/Magadan",
    "Asia/Kamchatka",
    "Europe/London",
    "Europe/Berlin",
    "Europe/Kyiv",
    "Asia/Tbilisi",
    "Asia/Almaty",
    "Asia/Tashkent",
    "Asia/Dubai",
    "Asia/Kolkata",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Los_Angeles",
)

# The same median, from the store: the last 500 events' own text against their receive time.
OBSERVED_OFFSET = r"""
SELECT
    percentile_cont(0.5) WITHIN GROUP (ORDER BY offset_s) AS offset_s,
    count(*) AS samples
FROM (
    SELECT extract(epoch FROM (
        (coalesce(data->>'changed_at_text', data->>'published_at_text'))::timestamp
        - ((data->>'received_at')::timestamptz AT TIME ZONE 'UTC')
    )) AS offset_s
    FROM events
    WHERE position > (SELECT coalesce(max(position), 0) - 500 FROM events)
      AND type IN ('ticket_changed', 'comment_created')
      AND data->>'received_at' IS NOT NULL
      AND coalesce(data->>'changed_at_text', data->>'published_at_text')
          ~ '^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$'
) AS recent
"""


def sample(event: Event) -> float | None:
    """UseDesk's naive time of `event` read as UTC, minus our receive time, in seconds; None for
    an event that says nothing (no text date, no receive time, or a date with an offset)."""
    if isinstance(event, TicketChanged):
        text = event.changed_at_text
    elif isinstance(event, CommentCreated):
        text = event.published_at_text
    else:
        return None
    if text is None or event.received_at is None or len(text) != _DOCUMENTED_DATE_CHARS:
        return None
    try:
        wall = datetime.fromisoformat(text).replace(tzinfo=UTC)
    except ValueError:
        return None
    return (wall - event.received_at).total_seconds()


def zone_offset(tz: ZoneInfo, at: datetime | None = None) -> float:
    moment = at or datetime.now(UTC)
    return (moment.astimezone(tz).utcoffset() or timedelta(0)).total_seconds()


def fitting_zone(offset: float, at: datetime | None = None) -> str:
    """A zone whose offset is within TOLERANCE of `offset`, or `UTC±hh:mm` when none is."""
    for name in CANDIDATE_ZONES:
        if abs(zone_offset(ZoneInfo(name), at) - offset) <= TOLERANCE:
            return name
    rounded = round(offset / 900) * 900
    sign = "+" if rounded >= 0 else "-"
    hours, minutes = divmod(abs(int(rounded)) // 60, 60)
    return f"UTC{sign}{hours:02d}:{minutes:02d}"


@dataclass(frozen=True)
class Verdict:
    offset: float  # seconds, the observed median
    samples: int
    configured: float  # seconds, the configured zone's offset now
    fits: str  # a zone that fits the observed offset

    @property
    def wrong(self) -> bool:
        return self.samples >= MIN_SAMPLES and abs(self.offset - self.configured) > TOLERANCE


def verdict(offset: float, samples: int, tz: ZoneInfo) -> Verdict:
    return Verdict(offset, samples, zone_offset(tz), fitting_zone(offset))


class ClockWatch:
    """The rolling median of recent samples (see the module doc)."""

    def __init__(self, window: int = WINDOW) -> None:
        self._samples: deque[float] = deque(maxlen=window)

    def observe(self, events: list[Event]) -> None:
        for event in events:
            value = sample(event)
            if value is not None:
                self._samples.append(value)

    def verdict(self, tz: ZoneInfo) -> Verdict | None:
        if not self._samples:
            return None
        return verdict(statistics.median(self._samples), len(self._samples), tz)


async def observed_offset(conn: Conn, tz: ZoneInfo) -> Verdict | None:
    """The store's answer: the median over the last events; None when there are none."""
    row = await conn.fetchrow(OBSERVED_OFFSET)
    if row is None or not row["samples"]:
        return None
    return verdict(float(row["offset_s"]), int(row["samples"]), tz)
