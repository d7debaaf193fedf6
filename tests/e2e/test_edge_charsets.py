"""End to end at the edge (issue 14, point 10): bodies in a declared charset reach the
projections intact, are kept as received, and lose their secrets like any other."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import aiohttp
import asyncpg

from shared.settings import Settings
from tests.helpers.deliveries import fixture
from tests.helpers.ingress import post_webhook, published, running_ingress
from tests.helpers.php_forms import form_pairs
from tests.helpers.secret import TEST_SECRET
from tests.helpers.worker import drain, queue_depths

CP1251_JSON = "application/json; charset=windows-1251"
CP1251_FORM = "application/x-www-form-urlencoded; charset=windows-1251"
SUBJECT = "Не приходит код подтверждения — заказ №5, «срочно»"
MESSAGE = "<p>Попробуйте перезапустить приложение; ёлки-палки!</p>"


async def test_windows_1251_json_and_form_bodies_reach_the_projections_intact(
    settings: Settings, db: asyncpg.Connection
) -> None:
    ticket = fixture("ticket_created.json")
    ticket["ticket"]["subject"] = SUBJECT
    json_body = json.dumps({**ticket, "secret": TEST_SECRET}, ensure_ascii=False).encode("cp1251")
    comment = fixture("comment_created.json")
    comment["comment"]["message"] = MESSAGE
    # PHP's http_build_query percent-encodes the bytes of each value in the page's charset.
    form_body = urlencode(form_pairs({**comment, "secret": TEST_SECRET}), encoding="cp1251").encode(
        "ascii"
    )
    assert b"\xcd\xe5" in json_body  # "Не" in windows-1251, not valid UTF-8
    assert b"%CF%EE" in form_body  # "По", percent-encoded in windows-1251

    async with running_ingress(settings) as url, aiohttp.ClientSession() as http:
        for body, content_type in [(json_body, CP1251_JSON), (form_body, CP1251_FORM)]:
            status, answer = await post_webhook(http, url, body, content_type)
            assert (status, "delivery_id" in answer) == (200, True), answer
    await drain(settings)

    rows = await db.fetch("SELECT kind, outcome, error, content_type, body FROM deliveries")
    assert sorted((r["kind"], r["outcome"], r["error"]) for r in rows) == [
        ("comment_created", "recorded", None),
        ("ticket_created", "recorded", None),
    ]
    stored = {r["kind"]: (r["content_type"], bytes(r["body"])) for r in rows}
    # Kept as received, in its own charset, only the secrets overwritten.
    assert stored["ticket_created"] == (
        CP1251_JSON,
        json_body.replace(TEST_SECRET.encode(), b"[redacted]").replace(
            b"b7Qz-19fk=pL0", b"[redacted]"
        ),
    )
    assert stored["comment_created"] == (
        CP1251_FORM,
        form_body.replace(TEST_SECRET.encode(), b"%5Bredacted%5D"),
    )
    subject = await db.fetchval("SELECT subject FROM tickets WHERE ticket_id = 3318840")
    message = await db.fetchval("SELECT message FROM ticket_comments WHERE comment_id = 412900871")
    assert (subject, message) == (SUBJECT, MESSAGE)
    assert await queue_depths(settings) == (0, 0)


async def test_an_unknown_charset_is_a_clear_400(settings: Settings) -> None:
    body = json.dumps({"ping": 1, "secret": TEST_SECRET}).encode()
    async with running_ingress(settings) as url, aiohttp.ClientSession() as http:
        status, text = await post_webhook(http, url, body, "application/json; charset=x-no-such")
    assert status == 400
    assert json.loads(text)["detail"] == "unknown: unknown charset 'x-no-such'"


async def test_a_windows_1251_form_loses_every_secret_field_however_deep_or_repeated(
    settings: Settings,
) -> None:
    body = (
        b"secret=hidden-1&ticket[subject]=%CA%EE%E4"
        b"&ticket[client][custom_blocks][0][secret_key]=hidden-2"
        b"&ticket[client][custom_blocks][0][secret_key]=hidden-3&secret=" + TEST_SECRET.encode()
    )
    async with running_ingress(settings) as url, aiohttp.ClientSession() as http:
        status, answer = await post_webhook(http, url, body, CP1251_FORM)
        assert status == 200, answer
    [message] = await published(settings, 1)
    assert message.content_type == CP1251_FORM  # redacted in place, in its own charset
    assert message.body == (
        b"secret=%5Bredacted%5D&ticket[subject]=%CA%EE%E4"
        b"&ticket[client][custom_blocks][0][secret_key]=%5Bredacted%5D"
        b"&ticket[client][custom_blocks][0][secret_key]=%5Bredacted%5D&secret=%5Bredacted%5D"
    )
