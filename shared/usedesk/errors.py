"""UseDesk decode errors in our words: kind, JSON path and reason, never the whole payload.

msgspec says "Expected `int | str | null`, got `str` - at `$.trigger.ticket_id`"; a
`DecodeError` says ``ticket_changed: trigger.ticket_id: expected an integer, got "abc"``.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from shared.errors import DecodeError

MISSING = object()
_AT = re.compile(r" - at `\$([^`]*)`$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_FLAGS = frozenset({"is_first", "delivered", "readed"})
_TYPE_NAMES = {"object": "an object", "array": "an array", "str": "a string"}
_INT_RANGE = f"an integer from 0 to {2**63 - 1}"
# msgspec names the bound it checked: "Expected `int` <= 2147483647" (a 32-bit column's).
_UPPER_BOUND = re.compile(r"Expected `int` <= (\d+)")
_SHOWN_CHARS = 40
_ENCODER = msgspec.json.Encoder()


def show(value: Any) -> str:
    """A value as an error message quotes it: short, JSON-like, never the whole payload."""
    if isinstance(value, str):
        cut = value[:_SHOWN_CHARS]
        return _ENCODER.encode(cut).decode() + ("…" if len(value) > _SHOWN_CHARS else "")
    if isinstance(value, bool) or value is None:
        return _ENCODER.encode(value).decode()
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else "a huge integer"
    if isinstance(value, float):
        return repr(value)
    return "an object" if isinstance(value, dict) else "an array"


def translate(kind: str, message: str, payload: Any) -> DecodeError:
    """msgspec's "Expected `int | str | null`, got `str` - at `$.trigger.ticket_id`" in our words:
    ``ticket_changed: trigger.ticket_id: expected an integer, got "abc"``."""
    found = _AT.search(message)
    dotted = found.group(1) if found else ""
    detail = message[: found.start()] if found else message
    path = dotted.lstrip(".")
    reason = _expected(detail, path.rpartition(".")[2])
    value = _lookup(payload, dotted)
    if value is not MISSING:
        reason = f"{reason}, got {show(value)}"
    return DecodeError(kind, path, reason)


def _expected(detail: str, leaf: str) -> str:
    if "out of range" in detail:
        return "number out of range"
    if detail.startswith("Expected `int` "):
        bound = _UPPER_BOUND.match(detail)
        return (
            f"expected an integer from 0 to {bound.group(1)}" if bound else f"expected {_INT_RANGE}"
        )
    wanted = detail.removeprefix("Expected `").partition("`")[0].split(" | ")
    # Our only text alternative to an int or a flag is `""`, so those read as one type.
    if detail.startswith("Invalid enum value") or "int" in wanted:
        return "expected 0 or 1" if leaf in _FLAGS else "expected an integer"
    names = [_TYPE_NAMES[name] for name in wanted if name in _TYPE_NAMES]
    if detail.startswith("Expected `") and names:
        return "expected " + " or ".join(names)
    return detail[:1].lower() + detail[1:]


def _lookup(payload: Any, dotted: str) -> Any:
    node = payload
    for key, index in _STEP.findall(dotted):
        if key and isinstance(node, dict) and key in node:
            node = node[key]
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return MISSING
    return node
