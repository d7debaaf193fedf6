"""The decoding rules, one at a time: ids, statuses, authors, text, dates, parts, clients."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from shared.events import ClientRef, CommentCreated, CustomField, FieldChange, TicketCreated
from shared.usedesk import decode_webhook
from tests.helpers.usedesk import JSON, MOSCOW, RECEIVED, event, fixture, utc


def test_ids_as_numeric_strings_and_as_numbers_give_the_same_event() -> None:
    as_numbers = fixture("ticket_changed.json")
    as_strings = copy.deepcopy(as_numbers)
    trigger = as_strings["trigger"]
    for key in ("id", "user_id", "ticket_id", "old_status", "new_status", "company_id"):
        trigger[key] = str(trigger[key])
    as_strings["custom_fields"][0]["id"] = "61"
    assert event(as_strings) == event(as_numbers)
    as_numbers["trigger"]["new_status"] = 2.0
    assert event(as_numbers).new_status == 2


def test_empty_and_zero_ids_mean_none() -> None:
    created = event({"ticket": {"id": 9, "group": 0, "assignee_id": "", "status_id": "0"}})
    assert (created.group_id, created.assignee_id, created.status_id) == (None, None, None)
    assert event({"ticket": {"id": 9, "group": "12"}}).group_id == 12


@pytest.mark.parametrize(
    ("trigger", "statuses"),
    [
        ({"old_status": 5, "new_status": 1}, (5, 1)),
        ({}, (1, 2)),
        ({"new_status": "3"}, (1, 3)),
        ({"old_status": None, "data": [{"target": "status_id", "value": 2}]}, (None, 2)),
        ({"data": [{"target": "status_id", "value": "two", "old_value": ""}]}, (None, None)),
    ],
)
def test_statuses_fall_back_to_the_status_change_in_data(
    trigger: dict[str, Any], statuses: tuple[int | None, int | None]
) -> None:
    data = [
        {"target": "subject", "value": "x"},
        {"target": "status_id", "value": "2", "old_value": "1"},
    ]
    payload = {"trigger": {"id": 1, "ticket_id": 2, "data": data} | trigger}
    changed = event(payload)
    assert (changed.old_status, changed.new_status) == statuses


@pytest.mark.parametrize(
    ("trigger", "changed_by", "user_id", "rule_id"),
    [
        ({"user_id": 48211, "trigger_id": None}, "user", 48211, None),
        ({"user_id": None, "trigger_id": "777"}, "rule", None, 777),
        ({"user_id": 5, "trigger_id": 6}, "user", 5, 6),
        ({}, "unknown", None, None),
    ],
)
def test_who_made_a_change(
    trigger: dict[str, Any], changed_by: str, user_id: int | None, rule_id: int | None
) -> None:
    changed = event({"trigger": {"id": 1, "ticket_id": 2} | trigger})
    assert (changed.changed_by, changed.user_id, changed.rule_id) == (changed_by, user_id, rule_id)


def test_change_values_become_text_and_nulls_stay_null() -> None:
    data = [
        {"target": "comment_from_agent", "value": 412900871, "old_value": None},
        {"target": "new_tags", "value": ["vip", "срочно"], "old_value": []},
        {"target": "flag", "value": True, "old_value": False},
        {"target": 7, "value": 1.5},
        {"target": None, "value": None, "old_value": None},
        {"value": "no target"},
    ]
    changed = event({"trigger": {"id": 1, "ticket_id": 2, "data": data}})
    # Text as a form would carry it, and beside it the JSON of what was not a string.
    assert changed.changes == (
        FieldChange(
            target="comment_from_agent",
            value="412900871",
            old_value=None,
            value_json="412900871",
        ),
        FieldChange(
            target="new_tags",
            value='["vip","срочно"]',
            old_value=None,
            value_json='["vip","срочно"]',
            old_value_json="[]",
        ),
        FieldChange(
            target="flag", value="1", old_value="", value_json="true", old_value_json="false"
        ),
        FieldChange(target="7", value="1.5", value_json="1.5"),
        FieldChange(target="", value="no target"),
    )


def test_every_key_of_a_change_entry_is_kept() -> None:
    data = [{"target": "sla_first_reply_time", "value": "2024-03-05 12:00:00", "sla_id": 7}]
    changed = event({"trigger": {"id": 1, "ticket_id": 2, "data": data}})
    assert changed.changes[0].extra == {"sla_id": 7}


def test_an_odd_scalar_where_text_belongs_is_kept_with_a_warning() -> None:
    """A numeric subject, `"email": false`, a numeric message: coerced, not rejected."""
    warnings: list[str] = []
    body = {"ticket": {"id": 1, "subject": 42, "email": False, "message": 7.5}}
    created = decode_webhook(
        json.dumps(body).encode(), JSON, received_at=RECEIVED, tz=MOSCOW, warnings=warnings
    )[1]
    assert isinstance(created, TicketCreated)
    assert (created.subject, created.email, created.message) == ("42", None, "7.5")
    assert warnings == [
        'ticket_created: ticket.subject: expected text, got 42; kept as "42"',
        "ticket_created: ticket.email: expected text, got false; kept as null",
        'ticket_created: ticket.message: expected text, got 7.5; kept as "7.5"',
    ]


@pytest.mark.parametrize(
    ("raw", "zone", "expected"),
    [
        ("2024-03-05 11:37:52", "Europe/Moscow", "2024-03-05 08:37:52"),
        ("2024-07-01 12:00:00", "Europe/Berlin", "2024-07-01 10:00:00"),
        ("2024-01-01 12:00:00", "Europe/Berlin", "2024-01-01 11:00:00"),
        ("2024-03-05T11:37:52+05:00", "Europe/Moscow", "2024-03-05 06:37:52"),
        ("2024-03-05T11:37:52Z", "Europe/Moscow", "2024-03-05 11:37:52"),
        ("2024-03-05 11:37", "Europe/Moscow", "2024-03-05 08:37:00"),
    ],
)
def test_dates_are_read_in_the_configured_zone_and_kept_in_utc(
    raw: str, zone: str, expected: str
) -> None:
    comment = event({"comment": {"id": 1, "ticket_id": 2, "published_at": raw}}, tz=ZoneInfo(zone))
    assert comment.published_at == utc(expected)
    assert comment.published_at.tzinfo is UTC
    assert (comment.occurred_at, comment.time_source) == (utc(expected), "usedesk")


@pytest.mark.parametrize("raw", ["", None, "0000-00-00 00:00:00"])
def test_a_missing_date_falls_back_to_the_receive_time(raw: str | None) -> None:
    rating = event({"csi": {"id": 1, "ticket_id": 2, "created_at": raw, "updated_at": raw}})
    assert (rating.updated_at, rating.occurred_at, rating.time_source) == (
        None,
        RECEIVED,
        "received",
    )
    naive = event({"csi": {"id": 1, "ticket_id": 2}}, received_at=datetime(2024, 1, 2, 3, 4))
    assert naive.occurred_at == datetime(2024, 1, 2, 3, 4, tzinfo=UTC)


def test_occurred_at_prefers_publication_then_last_update_and_update_then_creation() -> None:
    created = event({"ticket": {"id": 1, "last_updated_at": "2024-03-05 10:00:00"}})
    assert (created.occurred_at, created.published_at) == (utc("2024-03-05 07:00:00"), None)
    rated = event({"csi": {"id": 1, "ticket_id": 2, "created_at": "2024-03-05 10:00:00"}})
    assert rated.occurred_at == utc("2024-03-05 07:00:00")
    rerated = {"created_at": "2024-03-05 10:00:00", "updated_at": "2024-03-06 10:00:00"}
    rated = event({"csi": {"id": 1, "ticket_id": 2} | rerated})
    assert rated.occurred_at == utc("2024-03-06 07:00:00")
    # UseDesk's own text, never the converted instant: a new zone cannot make a new fact.
    assert rated.source_id == "1@2024-03-06 10:00:00"


def test_company_id_comes_from_the_payload_else_from_the_argument() -> None:
    assert event(fixture("comment_created.json"), company_id=42).company_id == 42
    assert event(fixture("rating.json"), company_id=42).company_id == 160442
    assert event(fixture("variants/ticket_changed.minimal.json")).company_id is None


def test_parts_are_found_inside_the_ticket_or_at_the_top_level() -> None:
    inside = fixture("ticket_created.json")
    outside = copy.deepcopy(inside)
    outside["custom_fields"] = outside["ticket"].pop("custom_fields")
    outside["ticket"]["custom_fields"] = []
    outside["client"] = {"id": 5, "name": "Марина"}
    inside["ticket"]["client"] = {"id": 5, "name": "Марина"}
    assert event(outside) == event(inside)
    assert event(inside).client == ClientRef(id=5, name="Марина")


def test_client_contacts_are_flattened_and_empty_ones_dropped() -> None:
    client = {
        "id": "5",
        "emails": [{"email": "a@example.org"}, {"email": ""}, "b@example.org"],
        "phones": [{"phone": 79161234567}, {"phone": ""}, {"phone": None}],
    }
    created = event({"ticket": {"id": 1}, "client": client})
    assert created.client == ClientRef(
        id=5,
        emails=("a@example.org", "b@example.org"),
        phones=("79161234567",),
        phone_types=(None,),
    )
    assert event({"ticket": {"id": 1}, "client": {"emails": [], "phones": []}}).client is None


def test_comment_visibility_author_and_first_flag() -> None:
    base = {"id": 1, "ticket_id": 2}
    private = event({"comment": base | {"type": "private", "from": "client", "is_first": "1"}})
    assert (private.visibility, private.author, private.is_first) == ("private", "client", True)
    odd = event({"comment": base | {"type": "whisper", "is_first": ""}})
    assert (odd.visibility, odd.author, odd.is_first) == (None, None, False)


def test_unknown_fields_anywhere_are_ignored() -> None:
    plain = fixture("ticket_changed.json")
    noisy = copy.deepcopy(plain)
    noisy["new_top"] = {"deep": [[{"x": 1}]]}
    noisy["trigger"]["unknown"] = None
    noisy["client"]["files"] = [{"url": "x"}]
    noisy["custom_fields"][1]["kind"] = "select"
    assert event(noisy) == event(plain)


def test_what_usedesk_documents_reaches_the_event() -> None:
    """The client's note, additional ids and phone types, the top-level assignee, a comment's
    custom fields and files, an unknown comment type (webhooks.md §3, §4.2, §4.3)."""
    comment = fixture("comment_created.json")
    comment["client"]["note"] = "VIP"
    comment["assignee_id"] = "48211"
    comment["comment"]["type"] = "note"
    comment["comment"]["files"] = [{"name": "a.png", "file": "https://x/a.png"}]
    commented = event(comment)
    assert isinstance(commented, CommentCreated)
    assert commented.client is not None
    assert (commented.client.note, commented.client.additional_ids) == ("VIP", ("crm-20931",))
    assert commented.client.phone_types == ("mobile",)
    assert (commented.assignee_id, commented.visibility, commented.type_sent) == (
        48211,
        None,
        "note",
    )
    assert commented.custom_fields == (CustomField(id=61, name="Order number", value=None),)
    assert commented.files_json == '[{"file":"https://x/a.png","name":"a.png"}]'
    changed = fixture("ticket_changed.json") | {"assignee_id": 7}
    assert event(changed).assignee_id == 7


def test_arrays_sent_as_php_sparse_objects_are_read_in_order() -> None:
    payload = fixture("ticket_changed.json")
    fields = payload["custom_fields"]
    payload["custom_fields"] = {"3": fields[0], "7": fields[1]}
    payload["trigger"]["data"] = dict(enumerate(payload["trigger"]["data"]))
    assert event(payload) == event(fixture("ticket_changed.json"))
