"""A declared charset is honoured wherever a body is read (issue 14, point 10): the charset a
`Content-Type` names, JSON and both form encodings, at the ingress and in the worker."""

from __future__ import annotations

import encodings
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import pytest

from shared.errors import DecodeError
from shared.usedesk import decode_webhook, parse_body
from shared.usedesk.forms import parse_form
from shared.usedesk.media import charset_codec, edits_like_ascii, media_type
from tests.helpers.deliveries import fixture
from tests.helpers.php_forms import form_pairs, multipart

JSON = "application/json"
URLENCODED = "application/x-www-form-urlencoded"
SUBJECT = "Не приходит код — №5, «срочно», ёж"
PAYLOAD: dict[str, Any] = {
    "secret": "s",
    "ticket": {"id": "7", "subject": SUBJECT, "tags": ["Счёт", "VIP"]},
}


@pytest.mark.parametrize(
    ("charset", "codec"),
    [
        ("windows-1251", "cp1251"),
        ("Windows_1251", "cp1251"),
        ('"CP1251"', "cp1251"),
        ("koi8-r", "koi8-r"),
        ("ISO-8859-5", "iso8859-5"),
        ("utf-16", "utf-16"),
        ("utf-8", None),
        ("UTF8", None),
        ("us-ascii", None),
    ],
)
def test_a_charset_names_a_codec_and_utf8_needs_none(charset: str, codec: str | None) -> None:
    assert media_type(f"{JSON}; charset={charset}").codec() == codec


@pytest.mark.parametrize("charset", ["x", "x-no-such", "base64", "rot13", "undefined", "aliases"])
def test_an_unknown_charset_or_a_codec_that_is_no_charset_is_a_decode_error(charset: str) -> None:
    with pytest.raises(DecodeError, match=f"unknown charset '{charset}'"):
        parse_body(b'{"ping": 1}', f"{JSON}; charset={charset}")
    with pytest.raises(DecodeError, match=f"unknown charset '{charset}'"):
        parse_form(b"ping=1", f"{URLENCODED}; charset={charset}")


def test_charset_names_from_the_sender_never_grow_the_codec_registry() -> None:
    # The registry caches each name it is asked for, misses too: only known names reach it.
    charset_codec("windows-1251")
    cached = len(encodings._cache)
    for n in range(3000):
        with pytest.raises(DecodeError):
            charset_codec(f"x-charset-{n}")
        assert charset_codec(f"windows{'-' * (n % 50)}1251") == "cp1251"
    assert len(encodings._cache) == cached


def test_only_utf8_and_single_byte_charsets_can_be_edited_byte_by_byte() -> None:
    assert [edits_like_ascii(codec) for codec in (None, "cp1251", "koi8-r", "iso8859-5")] == [
        True
    ] * 4
    assert not any(edits_like_ascii(c) for c in ("utf-16", "utf-7", "shift_jis", "cp037"))


@pytest.mark.parametrize("charset", ["windows-1251", "koi8-r", "utf-16", "utf-8"])
def test_a_json_body_in_its_declared_charset_parses_like_its_utf8_twin(charset: str) -> None:
    payload = {"secret": "s", "ticket": {"subject": "Не приходит код, ёж", "tags": ["Счёт"]}}
    body = json.dumps(payload, ensure_ascii=False).encode(charset)
    assert parse_body(body, f"{JSON}; charset={charset}") == payload


def test_a_json_body_with_bytes_its_charset_lacks_is_a_decode_error() -> None:
    body = b'{"ticket": {"subject": "\x98"}}'  # 0x98 is the one byte windows-1251 leaves undefined
    with pytest.raises(DecodeError, match="JSON body is not valid cp1251"):
        parse_body(body, f"{JSON}; charset=windows-1251")


def test_an_urlencoded_body_is_read_in_its_charset_escapes_and_raw_bytes_alike() -> None:
    escaped = urlencode(form_pairs(PAYLOAD), encoding="cp1251").encode("ascii")
    raw = "&".join(f"{k}={v}" for k, v in form_pairs(PAYLOAD)).encode("cp1251")
    content_type = f"{URLENCODED}; charset=windows-1251"
    assert parse_form(escaped, content_type) == parse_form(raw, content_type) == PAYLOAD
    assert parse_body(escaped, content_type) == PAYLOAD
    # The same escapes are not UTF-8, and a body that declares none is read as UTF-8.
    with pytest.raises(DecodeError, match="form body is not valid UTF-8"):
        parse_form(escaped, URLENCODED)
    with pytest.raises(DecodeError, match="form body is not valid cp1251"):
        parse_form(b"a=%98", content_type)


def test_a_multipart_body_is_read_in_its_charset_names_and_values_alike() -> None:
    body, content_type = multipart(PAYLOAD)
    body = body.decode("utf-8").replace("[tags]", "[теги]").encode("cp1251")
    ticket = {**PAYLOAD["ticket"]}
    ticket["теги"] = ticket.pop("tags")
    assert parse_form(body, f"{content_type}; charset=windows-1251") == {
        **PAYLOAD,
        "ticket": ticket,
    }
    with pytest.raises(DecodeError, match="multipart part is not valid UTF-8"):
        parse_form(body, content_type)


def decoded(body: bytes, content_type: str) -> tuple[str, Any]:
    received = datetime(2024, 3, 5, 12, tzinfo=UTC)
    return decode_webhook(body, content_type, received_at=received, tz=ZoneInfo("Etc/UTC"))


@pytest.mark.parametrize("name", ["ticket_created.json", "comment_created.json"])
def test_the_worker_decodes_a_windows_1251_webhook_like_its_utf8_twin(name: str) -> None:
    payload = fixture(name)
    twin = json.dumps(payload, ensure_ascii=False).encode()
    kind, event = decoded(twin, JSON)
    assert event is not None
    as_json = twin.decode().encode("cp1251")
    assert decoded(as_json, f"{JSON}; charset=windows-1251") == (kind, event)
    utf8_form = urlencode(form_pairs(payload)).encode("ascii")
    as_form = urlencode(form_pairs(payload), encoding="cp1251").encode("ascii")
    assert as_form != utf8_form
    content_type = f"{URLENCODED}; charset=windows-1251"
    assert decoded(as_form, content_type) == decoded(utf8_form, URLENCODED)
