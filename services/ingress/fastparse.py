"""`parse_body` for the ingress's hot path: the same payload, the same refusals, less work.

`shared.usedesk.parse_body` reads a JSON webhook in three passes beside the decode: a depth scan
of the bytes, and, to refuse a key named twice in one object (I8), a regex pass that strips every
string from the body to count the colons outside them, compared with the keys of the decoded
payload counted in Python. On a 2 KB webhook those took three times the decode itself.

Here a JSON body sent as UseDesk sends it is decoded first (msgspec bounds its own recursion,
raising `RecursionError` long before it could crash at the default limit) and then checked:

- Duplicate keys, by counting colons on both sides of one equation. Every colon byte of a valid
  JSON text either follows a key or sits inside a string, and a colon inside a string is that
  byte itself unless it is spelled `\\u003a`. msgspec re-encodes the payload the same way: one
  colon per key kept, plus the colons of every string kept. So with no `\\u003` escape in the
  body, `body.count(":") == encode(payload).count(":")` exactly when no key was dropped, that is
  when no object names a key twice (a dropped duplicate takes its colon, and the colons of its
  strings, out of the right side only).
- Depth, by counting brackets: a body with at most MAX_JSON_DEPTH of them cannot nest deeper;
  otherwise the payload is walked, at most MAX_JSON_DEPTH levels down.

Whenever a check does not pass, or the body is anything else (a form, another charset, invalid
JSON, not an object), the answer is `parse_body`'s own: it parses again and refuses (or accepts)
with its exact reasons. So this module can only be faster, never more lenient.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.usedesk import MAX_JSON_DEPTH, parse_body
from shared.usedesk.media import JSON
from shared.usedesk.wire import ANY_DECODER

# The `Content-Type` spellings UseDesk sends (parse_body reads them as UTF-8 JSON too).
PLAIN_JSON = frozenset({JSON, f"{JSON}; charset=utf-8", f"{JSON}; charset=UTF-8"})
_ENCODE = msgspec.json.Encoder().encode
# `\u0030`..`\u003f`, which includes the colon's escape `\u003a` / `\u003A`.
_COLON_ESCAPE = b"\\u003"


def parse(body: bytes, content_type: str) -> dict[str, Any]:
    """What `parse_body(body, content_type)` returns or raises (`DecodeError`)."""
    if content_type in PLAIN_JSON:
        payload = _checked_json(body)
        if payload is not None:
            return payload
    return parse_body(body, content_type)


def _checked_json(body: bytes) -> dict[str, Any] | None:
    """The decoded object when every check passes; None to leave the answer to parse_body."""
    try:
        payload = ANY_DECODER.decode(body)
        if payload.__class__ is not dict or _COLON_ESCAPE in body:
            return None
        if body.count(b":") != _ENCODE(payload).count(b":"):
            return None
    except (msgspec.MsgspecError, RecursionError, UnicodeError, ValueError):
        return None
    if body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH and _deeper_than(
        payload, MAX_JSON_DEPTH
    ):
        return None
    return payload


def _deeper_than(node: dict[str, Any] | list[Any], levels: int) -> bool:
    """Whether `node` (one level) nests more than `levels` levels; recurses `levels` at most."""
    if levels == 0:
        return True
    for value in node.values() if node.__class__ is dict else node:
        if (value.__class__ is dict or value.__class__ is list) and _deeper_than(value, levels - 1):
            return True
    return False
