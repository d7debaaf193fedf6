"""Lifecycle metrics of a ticket, derived from its status history sorted by version.

The history holds one entry per status-setting event (the creation's initial status and every
change with a new status). Everything here is recomputed from the sorted history, so it does not
matter in which order the entries arrived.
"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise

import msgspec

RESOLVED = frozenset({2, 3})  # completed, closed


class StatusEntry(msgspec.Struct, array_like=True, frozen=True):
    stamp: str
    at: datetime
    old: int | None
    new: int
    event: str  # "<type>:<source_id>", for logs


class Lifecycle(msgspec.Struct, frozen=True, kw_only=True):
    status_id: int | None = None
    first_resolved_at: datetime | None = None
    resolved_at: datetime | None = None
    reopened_count: int = 0
    status_durations: dict[str, int] = {}
    gaps: tuple[tuple[str, str], ...] = ()


def _resolved_at(history: list[StatusEntry]) -> datetime | None:
    """When the ticket entered the resolved run it is still in; None while it is open."""
    since: datetime | None = None
    for entry in reversed(history):
        if entry.new not in RESOLVED:
            break
        since = entry.at
    return since


def _durations(history: list[StatusEntry]) -> dict[str, int]:
    seconds: dict[str, int] = {}
    for entry, following in pairwise(history):
        spent = max(0, int((following.at - entry.at).total_seconds()))
        seconds[str(entry.new)] = seconds.get(str(entry.new), 0) + spent
    return seconds


def _gaps(history: list[StatusEntry]) -> tuple[tuple[str, str], ...]:
    """Pairs of events where a change's `old_status` is not the status the previous one left."""
    return tuple(
        (previous.event, entry.event)
        for previous, entry in pairwise(history)
        if entry.old is not None and entry.old != previous.new
    )


def lifecycle(history: list[StatusEntry]) -> Lifecycle:
    ordered = sorted(history, key=lambda entry: entry.stamp)
    if not ordered:
        return Lifecycle()
    reopened = sum(
        1
        for previous, entry in pairwise(ordered)
        if previous.new in RESOLVED and entry.new not in RESOLVED
    )
    return Lifecycle(
        status_id=ordered[-1].new,
        first_resolved_at=next((e.at for e in ordered if e.new in RESOLVED), None),
        resolved_at=_resolved_at(ordered),
        reopened_count=reopened,
        status_durations=_durations(ordered),
        gaps=_gaps(ordered),
    )
