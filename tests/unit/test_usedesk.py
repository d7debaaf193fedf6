"""UseDesk webhooks → domain events: every fixture checked by hand, as JSON and as forms."""

from __future__ import annotations

from typing import Any

import pytest

from shared.events import (
    ClientRef,
    CommentCreated,
    CustomField,
    Event,
    FieldChange,
    RatingGiven,
    TicketChanged,
    TicketCreated,
)
from shared.usedesk import Kind, decode_webhook, detect_kind
from tests.helpers.php_forms import URLENCODED, http_build_query, multipart
from tests.helpers.usedesk import FIXTURES, JSON, MOSCOW, RECEIVED, decode, fixture, utc

SUBJECT = "Не приходит код подтверждения"
# The top-level `client` of the change and comment fixtures, every documented part of it kept.
MARINA = ClientRef(
    id=5512309,
    name="Марина Ковалёва",
    emails=("marina.k@example.org",),
    phones=("79161234567",),
    phone_types=("mobile",),
    note=None,  # sent as ""
    additional_ids=("crm-20931",),
)
EXPECTED: dict[str, Event] = {
    "ticket_created.json": TicketCreated(
        ticket_id=3318840,
        company_id=160442,
        occurred_at=utc("2024-03-05 08:37:52"),
        status_id=8,
        subject=SUBJECT,
        client_id=5512309,
        assignee_id=None,
        group_id=None,
        channel_id=58213,
        email="marina.k@example.org",
        additional_id="ORD-77A19",
        message="<p>Здравствуйте! SMS с кодом не приходит уже второй день.</p>",
        published_at=utc("2024-03-05 08:37:52"),
        last_updated_at=utc("2024-03-05 08:37:52"),
        custom_fields=(
            CustomField(id=61, name="Order number", value=None),
            CustomField(id=64, name="Платформа", value="Android"),
        ),
        received_at=RECEIVED,
        published_at_text="2024-03-05 11:37:52",
        last_updated_at_text="2024-03-05 11:37:52",
    ),
    "ticket_changed.json": TicketChanged(
        ticket_id=3318840,
        change_id=90417733,
        company_id=160442,
        occurred_at=utc("2024-03-05 09:04:18"),
        changes=(
            FieldChange(target="assignee_id", value="48211", old_value=None),
            FieldChange(target="status_id", value="2", old_value="1"),
            FieldChange(target="subject", value="Код подтверждения (решено)", old_value=SUBJECT),
        ),
        old_status=1,
        new_status=2,
        user_id=48211,
        rule_id=None,
        changed_by="user",
        changed_at=utc("2024-03-05 09:04:18"),
        custom_fields=(
            CustomField(id=61, name="Order number", value="A-55120"),
            CustomField(id=64, name="Платформа", value="Android"),
        ),
        received_at=RECEIVED,
        changed_at_text="2024-03-05 12:04:18",
        client=MARINA,
    ),
    "comment_created.json": CommentCreated(
        ticket_id=3318840,
        comment_id=412900871,
        company_id=None,
        occurred_at=utc("2024-03-05 08:52:40"),
        message="<p>Попробуйте, пожалуйста, перезапустить приложение.</p>",
        visibility="public",
        author="user",
        user_id=48211,
        client_id=None,
        is_first=False,
        published_at=utc("2024-03-05 08:52:40"),
        received_at=RECEIVED,
        published_at_text="2024-03-05 11:52:40",
        custom_fields=(CustomField(id=61, name="Order number", value=None),),
        client=MARINA,
    ),
    "rating.json": RatingGiven(
        ticket_id=3318840,
        rating_id=2209154,
        company_id=160442,
        occurred_at=utc("2024-03-05 09:31:07"),
        rating=3,
        comment="Спасибо, помогли быстро",
        client_id=5512309,
        user_id=48211,
        ticket_comment_id=412900871,
        created_at=utc("2024-03-05 09:31:07"),
        updated_at=utc("2024-03-05 09:31:07"),
        received_at=RECEIVED,
        created_at_text="2024-03-05 12:31:07",
        updated_at_text="2024-03-05 12:31:07",
    ),
    "variants/ticket_changed.minimal.json": TicketChanged(
        ticket_id=3318841,
        change_id=90417790,
        occurred_at=RECEIVED,
        time_source="received",
        received_at=RECEIVED,
        changes=(FieldChange(target="assignee_id", value="50177", old_value=None),),
    ),
    "variants/ticket_created.numeric_toplevel.json": TicketCreated(
        ticket_id=3318841,
        company_id=160442,
        occurred_at=utc("2024-03-06 06:15:02"),
        status_id=8,
        subject="Вопрос по доставке",
        client_id=5512310,
        channel_id=58213,
        email=None,
        additional_id="",
        message="Где мой заказ?",
        published_at=utc("2024-03-06 06:15:02"),
        last_updated_at=utc("2024-03-06 06:15:02"),
        custom_fields=(CustomField(id=61, name="Order number", value="A-55131"),),
        # The phone "" is dropped, and with it its type.
        client=ClientRef(id=5512310, name="Oleg P."),
        received_at=RECEIVED,
        published_at_text="2024-03-06 09:15:02",
        last_updated_at_text="2024-03-06 09:15:02",
    ),
}


def test_every_fixture_has_a_hand_checked_event() -> None:
    on_disk = {str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*.json")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_decodes_to_its_hand_checked_event(name: str) -> None:
    body = (FIXTURES / name).read_bytes()
    expected = EXPECTED[name]
    assert decode_webhook(body, JSON, received_at=RECEIVED, tz=MOSCOW) == (expected.type, expected)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_each_fixture_as_a_php_form_decodes_to_the_same_event(name: str, encoding: str) -> None:
    payload = fixture(name)
    if encoding == "urlencoded":
        form = decode(http_build_query(payload), URLENCODED)
    else:
        form = decode(*multipart(payload))
    assert form == (EXPECTED[name].type, EXPECTED[name])


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ({"chat_id": 5, "text": "hi", "ticket": {"id": 1}}, "chat"),
        ({"ping": 1, "ticket": {"id": 1}}, "ping"),
        ({"secret": "s", "ticket": {"id": 1}, "trigger": {"id": 2}}, "ticket_created"),
        ({"trigger": None, "comment": {"id": 3}}, "ticket_changed"),
        ({"comment": {}, "csi": {}}, "comment_created"),
        ({"csi": {"id": 4}}, "rating"),
        ({"secret": "s", "client": {"id": 1}}, "unknown"),
    ],
)
def test_kind_comes_from_the_top_level_keys_chat_and_ping_first(
    payload: dict[str, Any], kind: Kind
) -> None:
    assert detect_kind(payload) == kind


@pytest.mark.parametrize(
    "payload",
    [
        {"chat_id": 77, "text": "hi", "platform": "telegram", "ticket": {"id": "not-a-number"}},
        {"chat_id": None, "ticket": {"id": 1, "published_at": "garbage"}},
        {"ping": True},
        {"ping": {"nested": [1]}, "trigger": "oops"},
        {"secret": "s", "something": {"new": 1}},
        {},
    ],
)
def test_chat_ping_and_unknown_payloads_carry_no_event(payload: dict[str, Any]) -> None:
    kind = detect_kind(payload)
    assert kind in ("chat", "ping", "unknown")
    assert decode(payload) == (kind, None)
    # A form drops a null key, and `"chat_id": null` is then no longer a chat.
    if payload and None not in payload.values():
        assert decode(http_build_query(payload), URLENCODED) == (kind, None)


@pytest.mark.parametrize(
    "content_type", [JSON, "application/json; charset=utf-8", "Application/JSON ; x=1", "a/b+json"]
)
def test_json_content_type_variants_are_json(content_type: str) -> None:
    body = (FIXTURES / "rating.json").read_bytes()
    assert decode(body, content_type) == ("rating", EXPECTED["rating.json"])
