"""Folding a `TicketSnapshot` (the API's word on a ticket's state) into the `tickets` projection.

A snapshot is what UseDesk's REST API reported, recorded by `deskledger reconcile` only where
the history did not lead to it. It is the state *after* the last change the API listed
(`after_change_id`), so it takes the version just after that change's (`tickets`' versions
follow UseDesk's order of changes, never dates): the usual rule then holds, a value changes
only when the event is newer than the one that set it (I5). Every change the snapshot already
reflects is older; a later change (a higher id) still wins over it. Its status joins the status
history, and its assignee, group and subject the field histories, with no old value: a
snapshot is never a suspected gap, and the change after it is checked against it.

This module extends `tickets`' fold with its own helpers (imported when folding: `tickets`
imports this module), so that each rule about a field stays written once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.events import TicketSnapshot
from shared.projections.lifecycle import StatusEntry

if TYPE_CHECKING:
    from shared.projections.tickets import TicketState

# Sorts after the version of the change (or creation) it follows, before the next one.
_AFTER = ".snapshot"
_FIELDS = ("company_id", "subject", "client_id", "assignee_id", "group_id", "channel_id")
# The API says "nobody" and "no group" as null or 0; it never says a subject is null.
_NULL_MEANS_NONE = frozenset({"assignee_id", "group_id"})


def version(event: TicketSnapshot) -> str:
    from shared.projections import tickets  # noqa: PLC0415 - tickets imports this module

    if event.after_change_id is None:
        return tickets.CREATED + _AFTER
    return tickets.change_version(event.after_change_id) + _AFTER


def fold(state: TicketState, event: TicketSnapshot) -> None:
    from shared.projections import tickets as t  # noqa: PLC0415 - t imports this module

    at, name = version(event), f"{event.type}:{event.source_id}"
    for field in _FIELDS:
        value = getattr(event, field)
        if value is None and field not in _NULL_MEANS_NONE:
            continue
        t._set(state, field, value, at)
        if field in t.GAP_FIELDS:
            t._field_history(state, field, t.FieldEntry(at, None, t._as_text(value), name))
    if event.tags is not None:
        named = set(event.tags)
        t._tags(state, sorted(named), True, at)
        t._tags(state, sorted(set(state.tags) - named), False, at)
    state.last_updated_at = t._later(state.last_updated_at, event.last_updated_at)
    if event.status_id is not None:
        dated = event.time_source == "usedesk"
        t._history(state, StatusEntry(at, event.occurred_at, None, event.status_id, name, dated))
