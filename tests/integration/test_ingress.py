"""The ingress against a real RabbitMQ: answers, the published envelope, redaction (I1, I7)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiohttp
import pytest

from services.ingress.app import WEBHOOK_PATH
from shared.broker import TopologyNames
from shared.envelope import (
    H_BODY_SHA256,
    H_CONTENT_TYPE,
    H_KIND,
    H_RECEIVED_AT,
)
from shared.settings import Settings
from tests.helpers.deliveries import FIXTURES
from tests.helpers.ingress import published, running_ingress
from tests.helpers.secret import TEST_SECRET
from tests.helpers.worker import queue_depths

FIXTURE_SECRET = "7c41d9e0a5b38f62e1d07b9a4c25f8813e6d0b7a"
BLOCK_SECRET = "b7Qz-19fk=pL0"
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"


def fixture_bytes(name: str) -> bytes:
    """A fixture as UseDesk would send it, with our test secret."""
    raw = (FIXTURES / name).read_bytes()
    return raw.replace(FIXTURE_SECRET.encode(), TEST_SECRET.encode())


def as_json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


@pytest.fixture
async def url(settings: Settings) -> AsyncIterator[str]:
    async with running_ingress(settings) as base:
        yield base


@pytest.fixture
async def unspooled_url(settings: Settings) -> AsyncIterator[str]:
    """An ingress without a spool: what the broker does not confirm is a 503."""
    async with running_ingress(settings.replace(spool_dir=None)) as base:
        yield base


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, content_type: str = JSON_TYPE
) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
    async with http.post(
        url + WEBHOOK_PATH, data=body, headers={"Content-Type": content_type}
    ) as response:
        return response.status, await response.json(), response.headers


async def test_ticket_created_is_kept_persistent_redacted_and_otherwise_unchanged(
    settings: Settings, url: str, http: aiohttp.ClientSession
) -> None:
    body = fixture_bytes("ticket_created.json")
    status, answer, _ = await post(http, url, body)
    assert status == 200, answer
    delivery_id = answer["delivery_id"]
    assert uuid.UUID(delivery_id).version == 4

    [message] = await published(settings, 1)
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == delivery_id
    assert message.content_type == JSON_TYPE
    assert message.routing_key == "webhook"
    assert message.exchange == TopologyNames.for_prefix(settings.amqp_prefix).exchange
    headers = message.headers
    assert headers[H_KIND] == "ticket_created"
    assert headers[H_CONTENT_TYPE] == JSON_TYPE
    assert H_BODY_SHA256 not in headers  # it gave short secrets away (issue 14)
    received_at = datetime.fromisoformat(str(headers[H_RECEIVED_AT]))
    assert received_at.utcoffset() is not None
    assert abs((datetime.now(UTC) - received_at).total_seconds()) < 60
    assert message.timestamp is not None

    expected = body.replace(TEST_SECRET.encode(), b"[redacted]").replace(
        BLOCK_SECRET.encode(), b"[redacted]"
    )
    assert message.body == expected
    assert TEST_SECRET.encode() not in message.body
    assert BLOCK_SECRET.encode() not in message.body


async def test_json_body_is_kept_byte_for_byte_apart_from_secrets(
    settings: Settings, url: str, http: aiohttp.ClientSession
) -> None:
    template = (
        '{ "secret" :\t"%s",\r\n "ticket":{"id":"3318840","subject":"Код \\u043a\\/\\"q\\"",'
        '"n":1.50,"e":1E5,"big":123456789012345678901234567890,"nil":null,'
        '"custom_blocks":[{"secret_key":"%s","url":"https:\\/\\/crm"},{"name":"no key"}]},'
        '"custom_blocks" : [ {"name":"top","secret_key" : "%s"} ],"tail":[ ]}'
    )
    body = (template % (TEST_SECRET, "inner\\u00e9key", "outer-key-123")).encode()
    status, answer, _ = await post(http, url, body)
    assert status == 200, answer

    [message] = await published(settings, 1)
    assert message.body == (template % ("[redacted]", "[redacted]", "[redacted]")).encode()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ticket_changed.json", "ticket_changed"),
        ("comment_created.json", "comment_created"),
        ("rating.json", "rating"),
    ],
)
async def test_every_ticket_kind_is_kept(
    settings: Settings, url: str, http: aiohttp.ClientSession, name: str, kind: str
) -> None:
    status, answer, _ = await post(http, url, fixture_bytes(name))
    assert status == 200, answer
    [message] = await published(settings, 1)
    assert message.headers[H_KIND] == kind
    assert TEST_SECRET.encode() not in message.body
    assert BLOCK_SECRET.encode() not in message.body


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ({"ping": 1}, "ping"),
        ({"chat_id": 7, "text": "hi", "ticket": {"id": 1}}, "chat"),
        ({"something": "new"}, "unknown"),
    ],
)
async def test_ping_chat_and_unknown_with_a_valid_secret_are_kept(
    settings: Settings,
    url: str,
    http: aiohttp.ClientSession,
    payload: dict[str, Any],
    kind: str,
) -> None:
    status, answer, _ = await post(http, url, as_json({**payload, "secret": TEST_SECRET}))
    assert status == 200, answer
    [message] = await published(settings, 1)
    assert message.message_id == answer["delivery_id"]
    assert message.headers[H_KIND] == kind
    assert json.loads(message.body) == {**payload, "secret": "[redacted]"}


async def test_any_configured_secret_is_accepted(
    settings: Settings, http: aiohttp.ClientSession
) -> None:
    other = "second-secret-for-the-app-id"
    async with running_ingress(settings.replace(secrets=(TEST_SECRET, other))) as url:
        for secret in (TEST_SECRET, other):
            status, answer, _ = await post(http, url, as_json({"ticket": {}, "secret": secret}))
            assert status == 200, answer
    assert len(await published(settings, 2)) == 2


async def test_ping_without_a_valid_secret_is_answered_and_not_kept(
    settings: Settings, url: str, http: aiohttp.ClientSession
) -> None:
    for payload in ({"ping": 1}, {"ping": 1, "secret": "wrong-secret-value"}):
        status, answer, _ = await post(http, url, as_json(payload))
        assert (status, answer) == (200, {"delivery_id": None})
    await assert_only_kept_afterwards(settings, url, http)


@pytest.mark.parametrize(
    "payload",
    [
        {"ticket": {"id": 1}},
        {"ticket": {"id": 1}, "secret": "wrong-secret-value"},
        {"ticket": {"id": 1}, "secret": TEST_SECRET[:-1]},
        {"ticket": {"id": 1}, "secret": 12345678901},
        {"ticket": {"id": 1}, "secret": [TEST_SECRET]},
        {"ticket": {"id": 1, "secret": TEST_SECRET}},
    ],
)
async def test_missing_or_wrong_secret_is_401_and_not_kept(
    settings: Settings, url: str, http: aiohttp.ClientSession, payload: dict[str, Any]
) -> None:
    status, answer, _ = await post(http, url, as_json(payload))
    assert status == 401
    assert answer["error"] == "unauthorized"
    assert TEST_SECRET not in json.dumps(answer)
    await assert_only_kept_afterwards(settings, url, http)


async def assert_only_kept_afterwards(
    settings: Settings, url: str, http: aiohttp.ClientSession
) -> None:
    """A confirmed webhook after the ones under test is the first and only message."""
    status, answer, _ = await post(http, url, as_json({"ticket": {}, "secret": TEST_SECRET}))
    assert status == 200, answer
    [message] = await published(settings, 1)
    assert message.message_id == answer["delivery_id"]
    assert await queue_depths(settings) == (0, 0)


@pytest.mark.parametrize(
    "body",
    [
        b'{"ticket": ',
        b"[1, 2]",
        b'"just a string"',
        b"",
        b'{"ticket": {}, "secret": "\xff\xfe"}',
        b"{" * 100 + b"}" * 100,
    ],
)
async def test_unparseable_json_is_400(url: str, http: aiohttp.ClientSession, body: bytes) -> None:
    status, answer, _ = await post(http, url, body)
    assert status == 400
    assert answer["error"] == "bad_body"
    assert answer["detail"]


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({"Content-Type": "text/plain"}, "unsupported_media_type"),
        ({"Content-Type": "application/xml"}, "unsupported_media_type"),
        ({}, "unsupported_media_type"),
        ({"Content-Type": JSON_TYPE, "Content-Encoding": "gzip"}, "unsupported_content_encoding"),
    ],
)
async def test_other_content_types_and_codings_are_415(
    url: str, http: aiohttp.ClientSession, headers: dict[str, str], error: str
) -> None:
    body = as_json({"ticket": {}, "secret": TEST_SECRET})
    async with http.post(
        url + WEBHOOK_PATH, data=body, headers=headers, skip_auto_headers=["Content-Type"]
    ) as response:
        assert response.status == 415
        assert (await response.json())["error"] == error


async def test_urlencoded_form_is_kept_with_secrets_overwritten_in_place(
    settings: Settings, url: str, http: aiohttp.ClientSession
) -> None:
    body = (
        f"secret={TEST_SECRET}&ticket%5Bid%5D=3318840&ticket%5Bsubject%5D=%D0%9A%D0%BE%D0%B4+1"
        f"&ticket%5Bcustom_blocks%5D%5B0%5D%5Bname%5D=CRM"
        f"&ticket%5Bcustom_blocks%5D%5B0%5D%5Bsecret_key%5D=b7Qz-19fk%3DpL0"
        f"&custom_blocks[0][secret_key]=top-level-key"
    ).encode()
    status, answer, _ = await post(http, url, body, FORM_TYPE)
    assert status == 200, answer

    [message] = await published(settings, 1)
    assert message.content_type == FORM_TYPE
    assert message.headers[H_CONTENT_TYPE] == FORM_TYPE
    assert message.headers[H_KIND] == "ticket_created"
    assert H_BODY_SHA256 not in message.headers
    assert message.body == (
        b"secret=%5Bredacted%5D&ticket%5Bid%5D=3318840&ticket%5Bsubject%5D=%D0%9A%D0%BE%D0%B4+1"
        b"&ticket%5Bcustom_blocks%5D%5B0%5D%5Bname%5D=CRM"
        b"&ticket%5Bcustom_blocks%5D%5B0%5D%5Bsecret_key%5D=%5Bredacted%5D"
        b"&custom_blocks[0][secret_key]=%5Bredacted%5D"
    )


async def test_multipart_form_is_kept_reencoded_as_json(
    settings: Settings, url: str, http: aiohttp.ClientSession
) -> None:
    fields = [
        ("secret", TEST_SECRET),
        ("comment[id]", "412900871"),
        ("comment[message]", "<p>Привет</p>"),
        ("custom_blocks[0][secret_key]", BLOCK_SECRET),
    ]
    boundary = "------------------------d74496d66958873e"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields
    ]
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    status, answer, _ = await post(http, url, body, f"multipart/form-data; boundary={boundary}")
    assert status == 200, answer

    [message] = await published(settings, 1)
    assert message.content_type == JSON_TYPE
    assert message.headers[H_CONTENT_TYPE] == JSON_TYPE
    assert message.headers[H_KIND] == "comment_created"
    assert json.loads(message.body) == {
        "secret": "[redacted]",
        "comment": {"id": "412900871", "message": "<p>Привет</p>"},
        "custom_blocks": [{"secret_key": "[redacted]"}],
    }


async def test_body_over_the_cap_is_413(settings: Settings, http: aiohttp.ClientSession) -> None:
    async with running_ingress(settings.replace(max_body_bytes=2048)) as url:
        padding = "x" * 2048
        body = as_json({"ticket": {"subject": padding}, "secret": TEST_SECRET})
        status, answer, _ = await post(http, url, body)
        assert (status, answer["error"]) == (413, "too_large")

        async def chunks() -> AsyncIterator[bytes]:
            yield body[:1000]
            yield body[1000:]

        # Without a Content-Length the cap is counted while reading.
        async with http.post(
            url + WEBHOOK_PATH, data=chunks(), headers={"Content-Type": JSON_TYPE}
        ) as response:
            assert response.status == 413
            assert (await response.json())["error"] == "too_large"

        fits = as_json({"ticket": {"subject": "x" * 1900}, "secret": TEST_SECRET})
        assert len(fits) <= 2048
        status, answer, _ = await post(http, url, fits)
        assert status == 200, answer


async def test_deleted_queue_is_503_never_200(
    settings: Settings, unspooled_url: str, http: aiohttp.ClientSession
) -> None:
    url = unspooled_url
    names = TopologyNames.for_prefix(settings.amqp_prefix)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(names.queue)

    for _ in range(3):
        status, answer, headers = await post(
            http, url, as_json({"ticket": {}, "secret": TEST_SECRET})
        )
        assert status == 503, answer
        assert answer["error"] == "broker_unavailable"
        assert int(headers["Retry-After"]) > 0


async def test_a_closed_channel_is_reopened(
    settings: Settings, unspooled_url: str, http: aiohttp.ClientSession
) -> None:
    """Publishing to a deleted exchange makes the broker close the channel (404)."""
    url = unspooled_url
    names = TopologyNames.for_prefix(settings.amqp_prefix)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(names.exchange)

    body = as_json({"ticket": {}, "secret": TEST_SECRET})
    status, answer, _ = await post(http, url, body)
    assert status == 503, answer
    deadline = time.monotonic() + 30
    while status != 200:
        assert time.monotonic() < deadline, f"still {status} {answer}"
        await asyncio.sleep(0.1)
        status, answer, _ = await post(http, url, body)
    [message] = await published(settings, 1)
    assert message.message_id == answer["delivery_id"]


async def test_a_channel_that_cannot_be_restored_is_reopened_later(
    settings: Settings, unspooled_url: str, http: aiohttp.ClientSession
) -> None:
    """A queue redeclared with other arguments makes aio-pika's own restore fail for good."""
    url = unspooled_url
    names = TopologyNames.for_prefix(settings.amqp_prefix)
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(names.exchange)
        await channel.queue_delete(names.queue)
        await channel.declare_queue(names.queue, durable=True)  # classic, not quorum

        body = as_json({"ticket": {}, "secret": TEST_SECRET})
        for _ in range(5):
            status, answer, _ = await post(http, url, body)
            assert status == 503, answer
            await asyncio.sleep(0.1)
        await channel.queue_delete(names.queue)

    deadline = time.monotonic() + 30
    while status != 200:
        assert time.monotonic() < deadline, f"still {status} {answer}"
        await asyncio.sleep(0.1)
        status, answer, _ = await post(http, url, body)
    [message] = await published(settings, 1)
    assert message.message_id == answer["delivery_id"]


async def test_health_readiness_and_metrics(url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(url + "/healthz") as response:
        assert response.status == 200
    async with http.get(url + "/readyz") as response:
        assert response.status == 200
    await post(http, url, as_json({"ticket": {}, "secret": TEST_SECRET}))
    await post(http, url, as_json({"ticket": {}}))
    async with http.get(url + "/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    assert 'deskledger_ingress_requests_total{kind="ticket_created",status="200"} 1.0' in text
    assert 'deskledger_ingress_requests_total{kind="ticket_created",status="401"} 1.0' in text
    assert "deskledger_ingress_publish_seconds_count 1.0" in text
    assert "deskledger_ingress_in_flight 0.0" in text
    assert "deskledger_ingress_broker_connected 1.0" in text
