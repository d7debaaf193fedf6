"""One bad value costs its own webhook only (issue 19, points 1 and 2).

Every message here is published to the real queue and drained by the real worker: a value the
decoder or the store cannot take ends as that delivery's `rejected` row (reprocessable), its
neighbours in the same batch are recorded, and nothing reaches the dead-letter queue.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import asyncpg
import pytest

from services.worker import consumer
from shared.envelope import Delivery
from shared.events import TicketCreated
from shared.recording import Decoded
from shared.settings import Settings
from shared.usedesk import Kind
from tests.helpers.deliveries import fixture
from tests.helpers.worker import drain, publish, queue_depths

INT32_MAX = 2**31 - 1


def _comment(comment_id: int, **changes: Any) -> dict[str, Any]:
    payload = fixture("comment_created.json")
    payload["comment"].update(id=comment_id, ticket_id=900_000 + comment_id, **changes)
    return payload


def _body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def _with(name: str, key: str, **changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(fixture(name))
    payload[key].update(changes)
    return payload


async def _outcomes(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch("SELECT outcome, count(*) AS n FROM deliveries GROUP BY outcome")
    return {row["outcome"]: row["n"] for row in rows}


@pytest.mark.parametrize(
    "date",
    [
        "0001-01-01 00:00:00",  # Moscow is UTC+2:30 then: the instant is before year 1
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:00:00-05:00",  # after year 9999 in UTC
    ],
)
async def test_a_date_out_of_range_costs_only_its_own_webhook(
    settings: Settings, db: asyncpg.Connection, date: str
) -> None:
    """Reproduced before the fix: all 61 deliveries were dead-lettered, none stored."""
    bodies: list[tuple[Kind, bytes]] = [("comment_created", _body(_comment(1, published_at=date)))]
    bodies += [("comment_created", _body(_comment(n))) for n in range(2, 62)]
    ids = await publish(settings, bodies)
    await drain(settings)
    assert await _outcomes(db) == {"recorded": 60, "rejected": 1}
    error = await db.fetchval("SELECT error FROM deliveries WHERE delivery_id = $1", ids[0])
    assert error.startswith("comment_created: comment.published_at: ")
    assert "out of range" in error
    assert await db.fetchval("SELECT count(*) FROM ticket_comments") == 60
    assert await queue_depths(settings) == (0, 0)


OUT_OF_RANGE = [
    ("ticket_created", _with("ticket_created.json", "ticket", status_id=INT32_MAX + 1)),
    ("ticket_created", _with("ticket_created.json", "ticket", status_id=str(2**63 - 1))),
    ("ticket_changed", _with("ticket_changed.json", "trigger", old_status=2**40)),
    ("ticket_changed", _with("ticket_changed.json", "trigger", new_status=2**63 - 1)),
    ("rating", _with("rating.json", "csi", rating=INT32_MAX + 1)),
]


@pytest.mark.parametrize(("kind", "payload"), OUT_OF_RANGE)
async def test_an_integer_wider_than_its_column_is_rejected(
    settings: Settings, db: asyncpg.Connection, kind: Kind, payload: dict[str, Any]
) -> None:
    """Reproduced before the fix: the decoder took any 63-bit integer; PostgreSQL refused it."""
    neighbours: list[tuple[Kind, bytes]] = [
        ("comment_created", _body(_comment(n))) for n in range(1, 6)
    ]
    ids = await publish(settings, [*neighbours[:2], (kind, _body(payload)), *neighbours[2:]])
    await drain(settings)
    assert await _outcomes(db) == {"recorded": 5, "rejected": 1}
    error = await db.fetchval("SELECT error FROM deliveries WHERE delivery_id = $1", ids[2])
    assert error.startswith(f"{kind}: ")
    assert f"expected an integer from 0 to {INT32_MAX}" in error
    assert await queue_depths(settings) == (0, 0)


async def test_a_nul_character_is_stored_the_same_in_events_and_projections(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Reproduced before the fix: events.data held U+FFFD, the projections refused U+0000 and
    every such webhook was dead-lettered. The body in `deliveries` keeps the original."""
    created = fixture("ticket_created.json")
    created["ticket"]["subject"] = "before\u0000after"
    created["ticket"]["custom_fields"][1]["value"] = "And\u0000roid"
    comment = fixture("comment_created.json")
    comment["comment"]["message"] = "<p>\u0000</p>"
    rating = fixture("rating.json")
    rating["csi"]["comment"] = "thanks\u0000"
    ids = await publish(
        settings,
        [
            ("ticket_created", _body(created)),
            ("comment_created", _body(comment)),
            ("rating", _body(rating)),
        ],
    )
    await drain(settings)
    assert await _outcomes(db) == {"recorded": 3}
    ticket = await db.fetchrow("SELECT subject, custom_fields FROM tickets")
    assert ticket["subject"] == "before\ufffdafter"
    assert json.loads(ticket["custom_fields"])["64"]["value"] == "And\ufffdroid"
    assert await db.fetchval("SELECT message FROM ticket_comments") == "<p>\ufffd</p>"
    assert await db.fetchval("SELECT comment FROM ticket_ratings") == "thanks\ufffd"
    data = await db.fetchval("SELECT data->'subject' FROM events WHERE type = 'ticket_created'")
    assert json.loads(data) == "before\ufffdafter"
    body = await db.fetchval("SELECT body FROM deliveries WHERE delivery_id = $1", ids[0])
    assert b"before\\u0000after" in body
    assert await queue_depths(settings) == (0, 0)


async def test_a_value_the_store_refuses_is_rejected_not_dead_lettered(
    settings: Settings, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net behind the decoder's checks: should a decoder ever let through a value
    that PostgreSQL refuses, that delivery alone is kept as `rejected` (reprocessable once the
    decoder is fixed) and its batch goes on. Simulated with a decoder that yields an event whose
    status does not fit the 32-bit column."""
    real = consumer.decode

    def leaky(delivery: Delivery, *args: Any) -> Decoded:
        item = real(delivery, *args)
        if isinstance(item.event, TicketCreated):
            event = TicketCreated(**{**_fields(item.event), "status_id": 2**40})
            return Decoded(item.delivery, event, None)
        return item

    monkeypatch.setattr(consumer, "decode", leaky)
    bodies: list[tuple[Kind, bytes]] = [("comment_created", _body(_comment(n))) for n in (1, 2)]
    ids = await publish(
        settings, [bodies[0], ("ticket_created", _body(fixture("ticket_created.json"))), bodies[1]]
    )
    await drain(settings)
    assert await _outcomes(db) == {"recorded": 2, "rejected": 1}
    error = await db.fetchval("SELECT error FROM deliveries WHERE delivery_id = $1", ids[1])
    assert error.startswith("ticket_created: the database refused a value: ")
    assert await db.fetchval("SELECT count(*) FROM events") == 2
    assert await queue_depths(settings) == (0, 0)


def _fields(event: TicketCreated) -> dict[str, Any]:
    return {name: getattr(event, name) for name in event.__struct_fields__}
