"""Secrets out, everything else as received (I7).

The `secret` field and every `custom_blocks[].secret_key` (top level, or inside a top-level
object such as `ticket`) are replaced by "[redacted]". The rest of the body is kept byte for byte
where the encoding allows: the secret values are overwritten in the raw bytes, and the result is
parsed again and must equal the redacted structure. When it does not (an unusual escape, a
duplicate key, a multipart body), the redacted structure is re-encoded as JSON instead, and the
published content type says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import msgspec

from shared.errors import DecodeError
from shared.usedesk import parse_body
from shared.usedesk.media import JSON, URLENCODED, media_type

REDACTED = "[redacted]"

# `\u0040`..`\u007f` could spell a key such as "secret" that a byte search would miss.
_ESCAPED_ASCII = re.compile(rb"\\u00[4-7]")
_SECRET_VALUE = re.compile(
    rb'("secret(?:_key)?"[ \t\r\n]*:[ \t\r\n]*)"(?:[^"\\]|\\.)*+"', re.DOTALL
)
# Form field names (decoded) that land on a secret, and any deeper name under one, which PHP's
# last-one-wins rule may have hidden from the parsed payload.
_SECRET_FIELD = re.compile(
    r"secret(?:\[.*)?|(?:[^\[\]]+\[custom_blocks\]|custom_blocks)\[[^\[\]]*\]\[secret_key\].*",
    re.DOTALL,
)
_REDACTED_FORM_VALUE = b"=%5Bredacted%5D"


@dataclass(frozen=True, slots=True)
class Redacted:
    """The body to publish and the content type to parse it with."""

    body: bytes
    content_type: str


def redact(body: bytes, content_type: str, payload: dict[str, Any]) -> Redacted:
    """`body` (which parses to `payload`) without its secrets."""
    expected, secret_keys = redacted_payload(payload)
    media = media_type(content_type).type
    if media == JSON:
        candidate = _json_in_place(body, secret_keys)
    elif media == URLENCODED:
        candidate = _form_in_place(body)
    else:
        candidate = None
    if candidate is not None and _parses_to(candidate, content_type, expected):
        return Redacted(candidate, content_type)
    return Redacted(msgspec.json.encode(expected), JSON)


def redacted_payload(payload: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A copy of `payload` with its secrets replaced, and how many `secret_key`s it had.

    Only the containers on the way to a secret are copied; `payload` is left untouched.
    """
    out = dict(payload)
    if "secret" in out:
        out["secret"] = REDACTED
    count = _redact_blocks(out)
    for key, value in payload.items():
        if isinstance(value, dict) and "custom_blocks" in value:
            inner = dict(value)
            found = _redact_blocks(inner)
            if found:
                out[key] = inner
                count += found
    return out, count


def _redact_blocks(container: dict[str, Any]) -> int:
    blocks = container.get("custom_blocks")
    # A form body with gaps in its indices gives a dict of blocks instead of a list.
    if isinstance(blocks, list):
        items = blocks
    elif isinstance(blocks, dict):
        items = list(blocks.values())
    else:
        return 0
    count = sum(1 for block in items if isinstance(block, dict) and "secret_key" in block)
    if count:
        if isinstance(blocks, list):
            container["custom_blocks"] = [_redact_block(block) for block in blocks]
        else:
            container["custom_blocks"] = {k: _redact_block(b) for k, b in blocks.items()}
    return count


def _redact_block(block: Any) -> Any:
    if isinstance(block, dict) and "secret_key" in block:
        return {**block, "secret_key": REDACTED}
    return block


def _json_in_place(body: bytes, secret_keys: int) -> bytes | None:
    # Every key named secret/secret_key must be spelled plainly and be one we redact: a
    # duplicate key is invisible in the parsed payload but still present in the bytes.
    if (
        body.count(b'"secret"') != 1
        or body.count(b'"secret_key"') != secret_keys
        or _ESCAPED_ASCII.search(body)
    ):
        return None
    redacted, replaced = _SECRET_VALUE.subn(rb'\1"[redacted]"', body)
    return redacted if replaced == 1 + secret_keys else None


def _form_in_place(body: bytes) -> bytes | None:
    """Overwrite the value of every pair whose (decoded) name is a secret's."""
    pairs = body.split(b"&")
    for index, pair in enumerate(pairs):
        name, _, _ = pair.partition(b"=")
        try:
            decoded = unquote_to_bytes(name.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if _SECRET_FIELD.fullmatch(decoded):
            pairs[index] = name + _REDACTED_FORM_VALUE
    return b"&".join(pairs)


def _parses_to(candidate: bytes, content_type: str, expected: dict[str, Any]) -> bool:
    try:
        return parse_body(candidate, content_type) == expected
    except DecodeError:
        return False
