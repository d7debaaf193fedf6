"""End to end at the edge (issue 14, points 11-12): nothing the ingress publishes or the
worker stores gives a secret away, neither in clear (at any depth, however often the body names
it) nor as a hash of the body as received."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable

import aiohttp
import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from shared.settings import Settings
from tests.helpers.deliveries import fixture
from tests.helpers.ingress import post_webhook, published, running_ingress
from tests.helpers.secret import TEST_SECRET
from tests.helpers.worker import drain

# A numeric app id, as UseDesk versions that send the app id in `secret` would.
SHORT_SECRET = "48213"


async def test_a_five_digit_secret_cannot_be_recovered_from_anything_stored_or_published(
    settings: Settings, db: asyncpg.Connection
) -> None:
    settings = settings.replace(secrets=(SHORT_SECRET,))
    original = json.dumps({**fixture("ticket_created.json"), "secret": SHORT_SECRET}).encode()
    async with running_ingress(settings) as url, aiohttp.ClientSession() as http:
        assert (await post_webhook(http, url, original, "application/json"))[0] == 200
        [message] = await published(settings, 1)  # consumed here: the broker's copy
        assert (await post_webhook(http, url, original, "application/json"))[0] == 200
    await drain(settings)  # the database's copy
    [row] = await db.fetch("SELECT * FROM deliveries")

    stored = bytes(row["body"])  # nothing else was changed
    assert stored == message.body
    assert SHORT_SECRET.encode() not in stored

    # The attack of issue 14: put each candidate where "[redacted]" stands, hash, look it up.
    def unredacted(candidate: bytes) -> bytes:
        with_secret = stored.replace(b'"secret": "[redacted]"', b'"secret": "%s"' % candidate)
        return with_secret.replace(b"[redacted]", b"b7Qz-19fk=pL0")

    assert unredacted(SHORT_SECRET.encode()) == original  # the search space holds the answer
    # The search finds the secret in the hash stored until issue 14 ...
    until_now = hashlib.sha256(original).hexdigest().encode()
    assert _crack(unredacted, until_now) == (SHORT_SECRET.encode(), 48_214)
    # ... and in nothing that is kept now.
    assert _crack(unredacted, _everything_kept(row, message)) == (None, 100_000)
    assert row["body_sha256"] is None
    assert "x-deskledger-body-sha256" not in (message.headers or {})


def _everything_kept(row: asyncpg.Record, message: AbstractIncomingMessage) -> bytes:
    """Every value of the delivery row and of the published message, in one haystack."""
    headers = message.headers or {}
    kept = [*row.values(), message.body, message.message_id, message.content_type]
    kept += [*headers.keys(), *headers.values()]
    return b"\n".join(v if isinstance(v, bytes) else str(v).encode() for v in kept)


def _crack(unredacted: Callable[[bytes], bytes], kept: bytes) -> tuple[bytes | None, int]:
    """The 5-digit secret whose body's SHA-256 (as hex, raw or base64) appears in `kept`, and
    how many candidates were tried."""
    folded = kept.lower()
    for tried, candidate in enumerate((b"%05d" % n for n in range(100_000)), start=1):
        digest = hashlib.sha256(unredacted(candidate)).digest()
        if digest.hex().encode() in folded or digest in kept or base64.b64encode(digest) in kept:
            return candidate, tried
    return None, 100_000


# Secrets where the documentation puts none, or hidden by a form's last-one-wins rule.
DEEP_JSON = {
    "secret": TEST_SECRET,
    "ticket": {
        "id": 3318840,
        "client": {"custom_blocks": [{"name": "CRM", "secret_key": "deep-key-2"}]},
        "custom_blocks": [{"name": "CRM", "secret_key": "block-key-1"}],
    },
    "client": {"id": 5512309, "custom_blocks": [{"secret_key": "client-key-3"}]},
    "custom_blocks": [{"block": {"secret_key": "nested-key-4"}}],
}
DEEP_FORM = (
    b"secret=hidden-secret-5&ticket%5Bid%5D=3318840"
    b"&ticket%5Bcustom_blocks%5D%5B0%5D%5Bsecret_key%5D=hidden-key-6"
    b"&ticket%5Bcustom_blocks%5D%5B0%5D%5Bsecret_key%5D=block-key-1"
    b"&ticket[client][custom_blocks][0][secret_key]=deep-key-2"
    b"&client[custom_blocks][1][secret_key]=client-key-3"
    b"&secret=" + TEST_SECRET.encode()
)
PLANTED = [
    b"block-key-1",
    b"deep-key-2",
    b"client-key-3",
    b"nested-key-4",
    b"hidden-secret-5",
    b"hidden-key-6",
]


async def test_secrets_at_any_depth_and_every_repeat_are_published_nowhere(
    settings: Settings,
) -> None:
    bodies = [
        (json.dumps(DEEP_JSON).encode(), "application/json"),
        (DEEP_FORM, "application/x-www-form-urlencoded"),
    ]
    async with running_ingress(settings) as url, aiohttp.ClientSession() as http:
        for body, content_type in bodies:
            status, answer = await post_webhook(http, url, body, content_type)
            assert status == 200, answer
    messages = await published(settings, len(bodies))
    assert len(messages) == len(bodies)
    for message in messages:
        kept = _everything_kept_of(message)
        assert [key for key in [*PLANTED, TEST_SECRET.encode()] if key in kept] == []
        assert message.headers["x-deskledger-kind"] == "ticket_created"


def _everything_kept_of(message: AbstractIncomingMessage) -> bytes:
    headers = message.headers or {}
    kept = [message.body, message.content_type, *headers.keys(), *headers.values()]
    return b"\n".join(v if isinstance(v, bytes) else str(v).encode() for v in kept)
