"""The peer: the `eventsourcing` library appending our ticket events to PostgreSQL.

Runs in its own virtualenv (build/bench/peer-venv), never imports DeskLedger:
    python peer_script.py EVENTS.jsonl BATCH
with POSTGRES_DBNAME/HOST/PORT/USER/PASSWORD in the environment. Each line of EVENTS.jsonl is
`{"ticket_id", "type", "data"}` in arrival order. One aggregate per ticket: its first event
creates it (carrying that event's data), later ones are recorded on it; every BATCH events the
aggregates touched are saved in one `Application.save` (one transaction), as our worker commits
a batch. Aggregates stay in memory, so nothing is read back. Prints `{"events", "seconds"}`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

os.environ.setdefault("PERSISTENCE_MODULE", "eventsourcing.postgres")

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

NAMESPACE = uuid.UUID("0f4a3c62-52a2-4b1e-9d0c-2f5f4f0d6a11")


class Ticket(Aggregate):
    @staticmethod
    def create_id(ticket_id: int, kind: str, data: dict[str, Any]) -> uuid.UUID:
        return uuid.uuid5(NAMESPACE, str(ticket_id))

    @event("Opened")
    def __init__(self, ticket_id: int, kind: str, data: dict[str, Any]) -> None:
        self.ticket_id = ticket_id
        self.events = 1

    @event("Recorded")
    def record(self, kind: str, data: dict[str, Any]) -> None:
        self.events += 1


def main(path: str, batch: int) -> None:
    lines = [json.loads(line) for line in open(path, encoding="utf-8")]  # noqa: SIM115
    app = Application()
    tickets: dict[int, Ticket] = {}
    started = time.perf_counter()
    for start in range(0, len(lines), batch):
        touched: dict[int, Ticket] = {}
        for item in lines[start : start + batch]:
            ticket = tickets.get(item["ticket_id"])
            if ticket is None:
                ticket = Ticket(item["ticket_id"], item["type"], item["data"])
                tickets[item["ticket_id"]] = ticket
            else:
                ticket.record(item["type"], item["data"])
            touched[item["ticket_id"]] = ticket
        app.save(*touched.values())
    seconds = time.perf_counter() - started
    print(json.dumps({"events": len(lines), "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
