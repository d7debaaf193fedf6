"""Lifecycle metrics of a ticket, derived from its status history (docs/semantics.md).

The history holds one entry per status-bearing event: the creation's initial status and every
change that names a new status (an assignee change that repeats the status too: it tells what
the status was then, which is how a lost change shows up as a gap). Entries are ordered by
their `stamp`: the creation first, then the changes by UseDesk's change id (`trigger.id`), which
UseDesk hands out in the order changes happen; a change's date never decides its place, so a
change that arrived without `changed_at` still takes its place by its id.

Times: an entry dated by UseDesk keeps its time. An undated one (a change without
`changed_at`) is placed between its dated neighbours: our receive time, clamped to the interval
the neighbours allow (`bounded` when clamped, `received` when it fitted). Everything here is
recomputed from the ordered history, so the arrival order of the entries does not matter.
"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Literal

import msgspec

RESOLVED = frozenset({2, 3})  # solved ("completed"), closed
# Deleted, spam, merged: the ticket ends; leaving "resolved" for one of these is no reopening.
ENDED = frozenset({4, 7, 10})
# Open, on hold, pending, new: leaving "resolved" for one of these is a reopening.
REOPENED = frozenset({1, 5, 6, 8})

EntryTime = Literal["usedesk", "received", "bounded"]


class StatusEntry(msgspec.Struct, array_like=True, frozen=True):
    stamp: str  # the order key (see the module doc)
    at: datetime  # UseDesk's time, or our receive time for an undated change
    old: int | None
    new: int
    event: str  # "<type>:<source_id>", for logs
    dated: bool = True  # `at` is UseDesk's own time


class Lifecycle(msgspec.Struct, frozen=True, kw_only=True):
    status_id: int | None = None
    first_resolved_at: datetime | None = None
    resolved_at: datetime | None = None
    reopened_count: int = 0
    status_durations: dict[str, int] = {}
    gaps: tuple[tuple[str, str], ...] = ()


class Placed(msgspec.Struct, frozen=True):
    """An entry with the time it counts at, and which time that is."""

    entry: StatusEntry
    at: datetime
    time: EntryTime


def place(history: list[StatusEntry]) -> list[Placed]:
    """The history in order, each entry with the time it counts at (see the module doc)."""
    ordered = sorted(history, key=lambda entry: entry.stamp)
    # For each place: the latest dated time before it and the earliest dated time after it.
    before: list[datetime | None] = []
    latest: datetime | None = None
    for entry in ordered:
        before.append(latest)
        if entry.dated and (latest is None or entry.at > latest):
            latest = entry.at
    after: list[datetime | None] = [None] * len(ordered)
    earliest: datetime | None = None
    for index in range(len(ordered) - 1, -1, -1):
        after[index] = earliest
        entry = ordered[index]
        if entry.dated and (earliest is None or entry.at < earliest):
            earliest = entry.at
    placed: list[Placed] = []
    for entry, lower, upper in zip(ordered, before, after, strict=True):
        if entry.dated:
            placed.append(Placed(entry, entry.at, "usedesk"))
            continue
        at = entry.at
        if lower is not None and at < lower:
            at = lower
        if upper is not None and at > upper:
            at = upper
        placed.append(Placed(entry, at, "received" if at == entry.at else "bounded"))
    return placed


def _resolution(placed: list[Placed]) -> tuple[datetime | None, datetime | None, int]:
    """(first resolved at, resolved at, reopened count) along the ordered history.

    `resolved_at` is when the ticket entered the resolved run it is in, and stays when the
    ticket then ends (deleted, spam, merged); it is cleared by a reopening.
    """
    first: datetime | None = None
    since: datetime | None = None
    reopened = 0
    previous: int | None = None
    for item in placed:
        status = item.entry.new
        if status in RESOLVED:
            if previous not in RESOLVED:
                since = item.at
            first = first or item.at
        elif status in REOPENED:
            reopened += previous in RESOLVED
            since = None
        elif status not in ENDED:
            since = None  # an unknown status: neither resolved nor ended
        previous = status
    return first, since, reopened


def _durations(placed: list[Placed]) -> dict[str, int]:
    seconds: dict[str, int] = {}
    for item, following in pairwise(placed):
        spent = max(0, int((following.at - item.at).total_seconds()))
        key = str(item.entry.new)
        seconds[key] = seconds.get(key, 0) + spent
    return seconds


def _gaps(placed: list[Placed]) -> tuple[tuple[str, str], ...]:
    """Pairs of events where a change's `old_status` is not the status the previous one left."""
    return tuple(
        (previous.entry.event, item.entry.event)
        for previous, item in pairwise(placed)
        if item.entry.old is not None and item.entry.old != previous.entry.new
    )


def lifecycle(history: list[StatusEntry]) -> Lifecycle:
    placed = place(history)
    if not placed:
        return Lifecycle()
    first, since, reopened = _resolution(placed)
    return Lifecycle(
        status_id=placed[-1].entry.new,
        first_resolved_at=first,
        resolved_at=since,
        reopened_count=reopened,
        status_durations=_durations(placed),
        gaps=_gaps(placed),
    )
