"""Folds are order-insensitive (I5): any arrival order gives the rows of in-order application."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.events import Event
from shared.eventstore import StoredEvent
from shared.projections import ALL
from shared.projections.base import fold_into, rows_of
from tests.helpers.histories import histories


def _rows(events: list[Event]) -> dict[str, list[tuple[Any, ...]]]:
    stored = [StoredEvent(i, e, None) for i, e in enumerate(events)]  # type: ignore[arg-type]
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for projection in ALL:
        states: dict[Any, Any] = {}
        fold_into(projection, states, stored)
        tables[projection.table] = sorted(rows_of(projection, states.values()))
    return tables


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_arrival_order_gives_the_same_rows(data: st.DataObject) -> None:
    events = data.draw(histories())
    shuffled = data.draw(st.permutations(events))
    assert _rows(list(shuffled)) == _rows(events)
