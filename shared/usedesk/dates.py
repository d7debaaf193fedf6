"""UseDesk's dates: naive `YYYY-MM-DD HH:MM:SS` text in an undocumented zone, read as instants.

The text is the fact and is kept in every event (`*_text`); the instant is a reading with
`DESKLEDGER_SOURCE_TIMEZONE` (docs/semantics.md). `read_date` is the one reader (the builders
of `mapping` use it); `read_dates` reads a stored event's dates again in a zone, which is how
the store's readers follow a corrected zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec

from shared.errors import DecodeError
from shared.events import CommentCreated, Event, RatingGiven, TicketChanged, TicketCreated
from shared.usedesk.errors import show

_ZERO = timedelta(0)
# `fromisoformat` on arbitrary text is bounded by this; real dates are 19 or 25 characters.
_MAX_DATE_CHARS = 40
_DOCUMENTED_DATE_CHARS = len("2024-03-05 11:52:40")
_fromisoformat = datetime.fromisoformat


def read_date(raw: str | None, tz: ZoneInfo, kind: str, path: str) -> datetime | None:
    """A UseDesk date as a UTC instant; naive ones are in the configured zone (§3: UNKNOWN)."""
    if not raw:
        return None
    if len(raw) == _DOCUMENTED_DATE_CHARS:
        # Nearly every date is "2024-03-05 11:52:40": read the wall time labelled UTC and
        # subtract the zone's offset for it (`utcoffset` reads only the fields). A quarter
        # of the cost of `replace(tzinfo=tz).astimezone(UTC)`; `_wall_in` inlined.
        try:
            wall = _fromisoformat(raw + "+00:00")
            return wall - (tz.utcoffset(wall) or _ZERO)
        except ValueError:
            pass
        except OverflowError:
            raise _out_of_range(raw, kind, path) from None
    return _any_date(raw, tz, kind, path)


def _any_date(raw: str, tz: ZoneInfo, kind: str, path: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(raw) if len(raw) <= _MAX_DATE_CHARS else None
    except ValueError:
        parsed = None
    if parsed is None:
        # PHP/MySQL write "no date" as an all-zero date, which no parser accepts.
        if raw.startswith("0000-00-00"):
            return None
        raise DecodeError(
            kind, path, f'expected a date like "2024-03-05 11:52:40", got {show(raw)}'
        )
    if parsed.tzinfo is None:
        return _wall_in(tz, datetime.combine(parsed.date(), parsed.time(), UTC), raw, kind, path)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise _out_of_range(raw, kind, path) from None


def _wall_in(tz: ZoneInfo, wall: datetime, raw: str, kind: str, path: str) -> datetime:
    """A wall time in `tz` (its fields labelled UTC) as a UTC instant.

    `utcoffset` reads only the fields. A wall time at either end of the calendar
    ("0001-01-01 00:00:00" east of UTC) has no instant Python can hold: a `DecodeError` of its
    own, never an `OverflowError` that would escape the decoder (issue 19).
    """
    try:
        return wall - (tz.utcoffset(wall) or _ZERO)
    except OverflowError:
        raise _out_of_range(raw, kind, path) from None


def _out_of_range(raw: str, kind: str, path: str) -> DecodeError:
    return DecodeError(kind, path, f"date out of range (years 1 to 9999 in UTC), got {show(raw)}")


def read_dates(event: Event, tz: ZoneInfo) -> Event:
    """`event` with its instants read again from UseDesk's date text in the zone `tz`.

    The store is read through this for folding, so the instants the projections see always
    follow `DESKLEDGER_SOURCE_TIMEZONE`; an event without text (stored before the text was
    kept) is returned as it is, and so is one whose text has no instant in `tz`.
    """
    try:
        return _read_dates(event, tz)
    except DecodeError:
        return event


def _read_dates(event: Event, tz: ZoneInfo) -> Event:
    kind, replace = event.type, msgspec.structs.replace
    match event:
        case TicketCreated() if event.published_at_text or event.last_updated_at_text:
            published = read_date(event.published_at_text, tz, kind, "ticket.published_at")
            updated = read_date(event.last_updated_at_text, tz, kind, "ticket.last_updated_at")
            occurred = published or updated or event.received_at or event.occurred_at
            return replace(
                event, published_at=published, last_updated_at=updated, occurred_at=occurred
            )
        case TicketChanged() if event.changed_at_text:
            changed = read_date(event.changed_at_text, tz, kind, "trigger.changed_at")
            return replace(event, changed_at=changed, occurred_at=changed or event.occurred_at)
        case CommentCreated() if event.published_at_text:
            published = read_date(event.published_at_text, tz, kind, "comment.published_at")
            return replace(
                event, published_at=published, occurred_at=published or event.occurred_at
            )
        case RatingGiven() if event.created_at_text or event.updated_at_text:
            created = read_date(event.created_at_text, tz, kind, "csi.created_at")
            updated = read_date(event.updated_at_text, tz, kind, "csi.updated_at")
            occurred = updated or created or event.received_at or event.occurred_at
            return replace(event, created_at=created, updated_at=updated, occurred_at=occurred)
    return event
