"""The ticket projections; the live worker and the replay both use exactly these."""

from __future__ import annotations

from typing import Any

from shared.projections import comments, field_changes, ratings, status_changes, tickets
from shared.projections.base import Projection

ALL: tuple[Projection[Any, Any], ...] = (
    tickets.PROJECTION,
    status_changes.PROJECTION,
    field_changes.PROJECTION,
    comments.PROJECTION,
    ratings.PROJECTION,
)
BY_NAME: dict[str, Projection[Any, Any]] = {p.name: p for p in ALL}
