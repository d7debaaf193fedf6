"""Secrets out, everything else as received (I7).

The value of every key named `secret` or `secret_key`, at any depth, is replaced by
"[redacted]": UseDesk documents `secret` at the top level and `custom_blocks[].secret_key` at
the top level or in `ticket`, but custom blocks can sit deeper (`client.custom_blocks[]`,
`ticket.client.custom_blocks[]`), and a key of either name holds a secret wherever it is.

The rest of the body is kept byte for byte where the encoding allows: the secret values are
overwritten in the raw bytes, and the result is parsed again (in the body's own charset) and
must equal the redacted structure. When it does not (an unusual escape, a duplicate key, a
multipart body, a charset such as UTF-16 whose bytes a byte search cannot read), the redacted
structure is re-encoded as UTF-8 JSON instead, and the published content type says so.

A form can name a field twice and PHP keeps the last value (`secret=a&secret=b`): the parsed
payload never shows the first, so form fields are overwritten by name, every one of them.

UTF-8 JSON as UseDesk sends it (the hot path) is redacted on its bytes alone, without walking
the payload or parsing the result, because there the bytes prove it. A key is a JSON string, and
the only other spelling of `secret` or `secret_key` is a `\\u00XX` escape of one of its ASCII
letters (all between U+0040 and U+007F), which sends the body to the checked path. So with no
such escape every key of either name is spelled `"secret"` / `"secret_key"` in the bytes. Each
such spelling is counted, wherever it is (a key, a value, a key that merely ends in it after an
escaped quote), and the value after every one that is followed by a colon and a string is
overwritten. When as many were overwritten as were counted, every key of either name, at any
depth and however often repeated, had a string value and it is gone (over-redacting at most a
key whose name ends in an escaped quote and `secret`). Otherwise (a value spelled `"secret"`, a
secret that is not a string) the checked path above decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import msgspec

from services.ingress.fastparse import PLAIN_JSON, parse
from shared.errors import DecodeError
from shared.usedesk.media import JSON, URLENCODED, edits_like_ascii, media_type

REDACTED = "[redacted]"
SECRET_KEYS = frozenset({"secret", "secret_key"})

# `\u0040`..`\u007f` could spell a key such as "secret" that a byte search would miss.
_ESCAPED_ASCII = re.compile(rb"\\u00[4-7]")
_SECRET_VALUE = re.compile(
    rb'("secret(?:_key)?"[ \t\r\n]*:[ \t\r\n]*)"(?:[^"\\]|\\.)*+"', re.DOTALL
)
# A form field name (decoded) with `secret` or `secret_key` as any of its segments, the first
# (`secret`, `secret[x]`) or one in brackets (`a[custom_blocks][0][secret_key]`): the field
# sets that key, or something under it.
_SECRET_FIELD = re.compile(r"\A(?:secret|secret_key)(?:\[|\Z)|\[(?:secret|secret_key)\]")
_REDACTED_FORM_VALUE = b"=%5Bredacted%5D"


@dataclass(frozen=True, slots=True)
class Redacted:
    """The body to publish and the content type to parse it with."""

    body: bytes
    content_type: str


def redact(body: bytes, content_type: str, payload: dict[str, Any]) -> Redacted:
    """`body` (which parses to `payload`) without its secrets."""
    if content_type in PLAIN_JSON:
        in_place = _plain_json_in_place(body)
        if in_place is not None:
            return Redacted(in_place, content_type)
    expected, secrets = redacted_payload(payload)
    media = media_type(content_type)
    codec = media.codec()
    candidate = None
    if edits_like_ascii(codec):
        if media.type == JSON:
            candidate = _json_in_place(body, secrets)
        elif media.type == URLENCODED:
            candidate = _form_in_place(body, codec)
    if candidate is not None and _parses_to(candidate, content_type, expected):
        return Redacted(candidate, content_type)
    return Redacted(msgspec.json.encode(expected), JSON)


def redacted_payload(payload: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A copy of `payload` with the value of every `secret` and `secret_key` replaced, at any
    depth, and how many there were.

    Only the containers on the way to a secret are copied; `payload` is left untouched.
    """
    return _redacted(payload)


def _redacted(node: Any) -> tuple[Any, int]:
    """`node` (a dict or a list) with its secrets replaced, and how many; `node` itself when it
    holds none. Its depth is bounded by the parser (I8)."""
    copy: Any = None
    count = 0
    items = node.items() if node.__class__ is dict else enumerate(node)
    for key, value in items:
        if key.__class__ is str and key in SECRET_KEYS:
            replacement, found = REDACTED, 1
        elif value.__class__ is dict or value.__class__ is list:
            replacement, found = _redacted(value)
            if not found:
                continue
        else:
            continue
        if copy is None:
            copy = node.copy()
        copy[key] = replacement
        count += found
    return (node, 0) if copy is None else (copy, count)


def _plain_json_in_place(body: bytes) -> bytes | None:
    """UTF-8 JSON without its secrets, when its bytes prove it (module docstring)."""
    named = body.count(b'"secret"') + body.count(b'"secret_key"')
    if _ESCAPED_ASCII.search(body):
        return None
    redacted, replaced = _SECRET_VALUE.subn(rb'\1"[redacted]"', body)
    return redacted if replaced == named else None


def _json_in_place(body: bytes, secrets: int) -> bytes | None:
    # Every key named secret/secret_key must be spelled plainly and be one we redact: a
    # duplicate key is invisible in the parsed payload but still present in the bytes.
    named = body.count(b'"secret"') + body.count(b'"secret_key"')
    if named != secrets or _ESCAPED_ASCII.search(body):
        return None
    redacted, replaced = _SECRET_VALUE.subn(rb'\1"[redacted]"', body)
    return redacted if replaced == secrets else None


def _form_in_place(body: bytes, codec: str | None) -> bytes | None:
    """Overwrite the value of every pair whose (decoded) name is, or is under, a secret's."""
    pairs = body.split(b"&")
    for index, pair in enumerate(pairs):
        name, _, _ = pair.partition(b"=")
        try:
            decoded = unquote_to_bytes(name.replace(b"+", b" ")).decode(codec or "utf-8")
        except UnicodeDecodeError:
            return None
        if _SECRET_FIELD.search(decoded):
            pairs[index] = name + _REDACTED_FORM_VALUE
    return b"&".join(pairs)


def _parses_to(candidate: bytes, content_type: str, expected: dict[str, Any]) -> bool:
    # `parse_body`'s answer, on the hot path's cheaper way (`fastparse`).
    try:
        return parse(candidate, content_type) == expected
    except DecodeError:
        return False
