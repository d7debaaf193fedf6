"""Form-encoded webhook bodies, read the way PHP fills `$_POST`.

UseDesk's default (non-JSON) encoding is undocumented; the likeliest guess is PHP's
`http_build_query` over the same nested array (`docs/usedesk-webhooks.md` §7), so bracket keys
such as `ticket[custom_fields][0][name]` are rebuilt into the nested dicts and lists a JSON body
would have. Every value stays a string: the wire structs convert numeric strings themselves.

Header parameters (the `boundary` of the content type, a part's `Content-Disposition`) are read
with the `email` package, whose parameter parser is quadratic in the number of `;` it meets (a
1 MB `Content-Disposition` with 500,000 parameters took 24 s). It runs before authentication, so
what reaches it is bounded first: a part's header block to `MAX_PART_HEAD_BYTES`, and a header
value to `MAX_HEADER_PARAMS` semicolons; beyond either the body is a `DecodeError` (400).
"""

from __future__ import annotations

from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import Any
from urllib.parse import parse_qsl

from shared.errors import DecodeError
from shared.usedesk.media import (
    MULTIPART,
    URLENCODED,
    charset_name,
    check_params,
    media_type,
    text,
)

# Bounds that keep hostile bodies cheap; a real webhook nests 4 deep and has ~100 fields.
MAX_DEPTH = 32
MAX_FIELDS = 10_000
# A numeric segment longer than this is a plain key: it cannot be a list index, and
# int() on thousands of digits is slow (and refused by Python beyond 4300).
_MAX_INDEX_DIGITS = 9
# A part's headers (curl sends ~60 bytes) and the `;` of one header value (a real one has 1-2).
# Within both, the `email` parser costs well under a millisecond.
MAX_PART_HEAD_BYTES = 8192
_KIND = "unknown"


class _Node(dict[str, Any]):
    """A PHP array under construction; `next_index` is where `[]` appends."""

    __slots__ = ("next_index",)

    def __init__(self) -> None:
        super().__init__()
        self.next_index = 0


def parse_form(body: bytes, content_type: str) -> dict[str, Any]:
    """The nested dict of an urlencoded or multipart body; `DecodeError` when it is malformed."""
    media = media_type(content_type)
    if media.type == URLENCODED:
        pairs = _urlencoded_pairs(body, media.codec())
    elif media.type == MULTIPART:
        pairs = _multipart_pairs(body, media.boundary or "", media.codec())
    else:
        raise DecodeError(_KIND, "", f"expected a form content type, got {media.type!r}")
    root = _Node()
    for key, value in pairs:
        _assign(root, _split_key(key), value)
    return _finish(root)


def _urlencoded_pairs(body: bytes, codec: str | None) -> list[tuple[str, str]]:
    """The pairs of an urlencoded body; both its bytes and the bytes its `%XX` escapes spell
    are text in `codec` (UTF-8 when None), as PHP reads a page's form in the page's charset."""
    codec = codec or "utf-8"
    try:
        return parse_qsl(
            text(body, codec, "form body"),
            keep_blank_values=True,
            encoding=codec,
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError as exc:  # an escape that spells no text in `codec`
        raise DecodeError(_KIND, "", f"form body is not valid {charset_name(codec)}") from exc
    except ValueError as exc:  # parse_qsl's only other ValueError: more than max_num_fields
        raise DecodeError(_KIND, "", f"form has more than {MAX_FIELDS} fields") from exc


def _multipart_pairs(body: bytes, boundary: str, codec: str | None) -> list[tuple[str, str]]:
    if not boundary or len(boundary) > 70 or not boundary.isascii():
        raise DecodeError(_KIND, "", "multipart content type needs a boundary of 1-70 ASCII chars")
    # Prefixing CRLF lets the first delimiter match like the others (RFC 2046 §5.1.1).
    # N parts make N + 2 chunks: the preamble, one per part, what follows the closing delimiter.
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("ascii"), MAX_FIELDS + 2)
    if len(chunks) > MAX_FIELDS + 2:
        raise DecodeError(_KIND, "", f"form has more than {MAX_FIELDS} fields")
    closed = [i for i, chunk in enumerate(chunks) if chunk.startswith(b"--")]
    if len(chunks) < 2 or not closed:
        raise DecodeError(_KIND, "", "multipart body has no closing boundary")
    pairs = []
    for chunk in chunks[1 : closed[0]]:
        pair = _multipart_part(chunk, codec or "utf-8")
        if pair is not None:
            pairs.append(pair)
    return pairs


def _multipart_part(chunk: bytes, codec: str) -> tuple[str, str] | None:
    """One part's (name, value), both text in `codec`; None for file uploads, which PHP keeps
    out of `$_POST` too."""
    _padding, newline, part = chunk.partition(b"\r\n")
    # Only the head is searched for its end: a huge head is refused without scanning the rest.
    end = part.find(b"\r\n\r\n", 0, MAX_PART_HEAD_BYTES + 4)
    if end < 0 and len(part) > MAX_PART_HEAD_BYTES + 4:
        raise DecodeError(_KIND, "", f"multipart part headers exceed {MAX_PART_HEAD_BYTES} bytes")
    if not newline or end < 0:
        raise DecodeError(_KIND, "", "multipart part without headers")
    head, content = part[:end], part[end + 4 :]
    disposition = _disposition(text(head, codec, "multipart part"))
    if disposition.get_param("filename", header="content-disposition") is not None:
        return None
    name = disposition.get_param("name", header="content-disposition")
    if name is None or disposition.get_content_disposition() != "form-data":
        raise DecodeError(_KIND, "", "multipart part without a form-data name")
    return collapse_rfc2231_value(name), text(content, codec, "multipart part")


def _disposition(headers: str) -> Message:
    message = Message()
    for line in headers.split("\r\n"):
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() == "content-disposition":
            check_params(value, "Content-Disposition")
            message["content-disposition"] = value.strip()
    return message


def _split_key(key: str) -> list[str]:
    """`a[b][]` → `["a", "b", ""]`: PHP's bracket syntax, refusing what PHP would mangle."""
    head, bracket, rest = key.partition("[")
    if not head:
        raise DecodeError(_KIND, _shown(key), "form key has no name before '['")
    segments = [head]
    while bracket:
        inner, closed, rest = rest.partition("]")
        if not closed:
            raise DecodeError(_KIND, _shown(key), "form key has an unclosed '['")
        segments.append(inner)
        if len(segments) > MAX_DEPTH:
            raise DecodeError(_KIND, _shown(key), f"form key nests deeper than {MAX_DEPTH}")
        if rest and not rest.startswith("["):
            raise DecodeError(_KIND, _shown(key), "form key has text after ']'")
        bracket, rest = rest[:1], rest[1:]
    return segments


def _shown(key: str) -> str:
    return key if len(key) <= 80 else key[:77] + "..."


def _assign(root: _Node, segments: list[str], value: str) -> None:
    node = root
    for segment in segments[:-1]:
        key = _index(node, segment)
        child = node.get(key)
        # PHP lets a later key replace a scalar with an array (and vice versa): last one wins.
        if not isinstance(child, _Node):
            child = _Node()
            node[key] = child
        node = child
    node[_index(node, segments[-1])] = value


def _index(node: _Node, segment: str) -> str:
    if segment == "":
        segment = str(node.next_index)
        node.next_index += 1
    elif _is_index(segment):
        node.next_index = max(node.next_index, int(segment) + 1)
    return segment


def _is_index(segment: str) -> bool:
    return (
        segment.isascii()
        and segment.isdigit()
        and len(segment) <= _MAX_INDEX_DIGITS
        and (segment == "0" or not segment.startswith("0"))
    )


def _finish(node: _Node) -> dict[str, Any]:
    """Plain dicts, with `{"0": a, "1": b}` turned into `[a, b]` as `json_encode` would."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        out[key] = _finish_value(value)
    return out


def _finish_value(value: str | _Node) -> Any:
    if isinstance(value, str):
        return value
    finished = _finish(value)
    count = len(finished)
    if count and all(_is_index(key) and int(key) < count for key in finished):
        return [finished[str(i)] for i in range(count)]
    return finished
