"""Listing every ticket updated in a window: `POST /tickets`, page after page.

Pages hold at most 100 tickets and there is no total and no "next" (api.md §2.1-2.2). What
`offset` means is not known: the documentation calls it a shift, the one client that pages
steps it by 1 as a page index. So it is detected: after a full first page, `offset=1` is asked
for. If it shares most of its ids with the first page, `offset` counts records (step 100); if
it shares none, it counts pages (step 1); if it is the very same page, the server ignores it,
and the listing is marked incomplete (the watermark then stays where it is). The listing stops
at a short page, at a page that brings no new id (a server that clamps the offset repeats its
last page), or at `max_pages`. Ids are deduplicated across pages: a ticket updated during the
listing can move between pages (§2.2 "drift"), and the next pass's overlap catches it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog

from shared.usedesk.api import PAGE_SIZE, UseDeskApi
from shared.usedesk.history import as_int

log = structlog.get_logger()

OffsetSemantics = Literal["single page", "record offset", "page index", "ignored"]
MAX_PAGES = 10_000


@dataclass
class Listing:
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    semantics: OffsetSemantics = "single page"
    pages: int = 0
    complete: bool = True
    note: str | None = None

    def add(self, page: list[dict[str, Any]]) -> int:
        """Add a page's tickets; how many were new."""
        self.pages += 1
        new = 0
        for item in page:
            ticket_id = as_int(item.get("id"))
            if ticket_id is not None and ticket_id not in self.tickets:
                self.tickets[ticket_id] = item
                new += 1
        return new


def api_minute(moment: datetime) -> str:
    """`updated_after`/`updated_before` as the documentation writes them, in UTC (A1)."""
    return moment.strftime("%Y-%m-%d %H:%M")


def window_filters(
    start: datetime, end: datetime, channels: list[int], statuses: list[int]
) -> dict[str, Any]:
    # Both bounds are inclusive and in whole minutes: round the end up, never cut a ticket off.
    filters: dict[str, Any] = {
        "updated_after": api_minute(start),
        "updated_before": api_minute(end + timedelta(minutes=1)),
        "sort": "id",
        "order": "asc",
    }
    if channels:
        filters["fchannel"] = ",".join(map(str, channels))
    if statuses:
        filters["fstatus"] = ",".join(map(str, statuses))
    return filters


def _ids(page: list[dict[str, Any]]) -> set[int | None]:
    return {as_int(item.get("id")) for item in page}


async def list_window(
    api: UseDeskApi, filters: dict[str, Any], max_pages: int = MAX_PAGES
) -> Listing:
    listing = Listing()
    first = await api.list_tickets({**filters, "offset": 0})
    listing.add(first)
    if len(first) < PAGE_SIZE:
        return listing
    second = await api.list_tickets({**filters, "offset": 1})
    shared = len(_ids(first) & _ids(second))
    if second and _ids(second) == _ids(first):
        listing.semantics, listing.complete = "ignored", False
        listing.note = "the API ignored `offset`: only the first 100 tickets could be listed"
        log.warning("reconcile_offset_ignored", hint="narrow the window (--since) and run again")
        return listing
    listing.semantics = "record offset" if shared > len(second) // 2 else "page index"
    log.info("reconcile_offset_detected", semantics=listing.semantics, overlap=shared)
    listing.add(second)
    if len(second) < PAGE_SIZE:
        return listing
    # `offset=1` covered records 1-100 (record offset) or page 1 (page index).
    step = PAGE_SIZE if listing.semantics == "record offset" else 1
    offset = 1 + step
    while True:
        if listing.pages >= max_pages:
            listing.complete = False
            listing.note = f"stopped after {max_pages} pages"
            break
        page = await api.list_tickets({**filters, "offset": offset})
        # A short page is the last; one with nothing new is a clamped repeat of the last.
        if not listing.add(page) or len(page) < PAGE_SIZE:
            break
        offset += step
    return listing
