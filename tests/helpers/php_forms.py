"""Form bodies the way PHP would send a webhook array (`docs/usedesk-webhooks.md` §7).

`http_build_query` mimics PHP's function of that name: bracket keys, every scalar as text,
`None` and empty arrays dropped, booleans as PHP casts them to text ("1" and ""). `multipart`
sends the same pairs as `multipart/form-data`, as cURL would with an array of fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

URLENCODED = "application/x-www-form-urlencoded"
BOUNDARY = "----DeskLedgerTestBoundary7MA4YWxkTrZu0gW"


def form_pairs(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`{"a": {"b": [1, None]}}` → `[("a[b][0]", "1")]`."""
    return list(_pairs(payload, ""))


def http_build_query(payload: Mapping[str, Any]) -> bytes:
    return urlencode(form_pairs(payload)).encode("ascii")


def multipart(payload: Mapping[str, Any], boundary: str = BOUNDARY) -> tuple[bytes, str]:
    """The body and its content type."""
    parts = []
    for key, value in form_pairs(payload):
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
        parts.append(head.encode() + value.encode() + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _pairs(value: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _pairs(item, f"{prefix}[{key}]" if prefix else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _pairs(item, f"{prefix}[{index}]")
    elif value is not None:
        yield prefix, _text(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else ""
    return str(value)
