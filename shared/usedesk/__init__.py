"""UseDesk, as DeskLedger reads it. The public entry points live here: `detect_kind` (cheap, on
the ingress hot path), `parse_body` (any body as a nested dict, for the ingress) and
`decode_webhook` (a body as its domain event, for the worker).

Beside them: `wire` (the payload structs), `mapping` (wire → event rules), `errors` (decode
errors in our words), `forms` (PHP form bodies), `media` (the one `Content-Type` parser). See
`docs/usedesk-webhooks.md` (from the wire-format research) for what each kind carries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec

from shared.errors import DecodeError
from shared.events import NUL_ESCAPE, Event, without_nul
from shared.usedesk.errors import MISSING, show, translate
from shared.usedesk.forms import parse_form
from shared.usedesk.mapping import comment_created, rating_given, ticket_changed, ticket_created
from shared.usedesk.media import JSON, MediaType, media_type, text
from shared.usedesk.wire import (
    ANY_DECODER,
    CLOSED_DECODER,
    ENVELOPE_DECODER,
    KIND_KEYS_DECODER,
    Envelope,
    KindKeys,
    Reread,
)

Kind = Literal[
    "ticket_created", "ticket_changed", "comment_created", "rating", "ping", "chat", "unknown"
]
KINDS: tuple[Kind, ...] = (
    "ticket_created",
    "ticket_changed",
    "comment_created",
    "rating",
    "ping",
    "chat",
    "unknown",
)
TICKET_KINDS: frozenset[Kind] = frozenset(KINDS[:4])
# The order matters: a chat payload also carries a `ticket` object and must never become a ticket.
_KIND_KEYS: tuple[tuple[str, Kind], ...] = (
    ("chat_id", "chat"),
    ("ping", "ping"),
    ("ticket", "ticket_created"),
    ("trigger", "ticket_changed"),
    ("comment", "comment_created"),
    ("csi", "rating"),
)
_BUILDERS: dict[
    Kind, Callable[[Envelope, datetime, ZoneInfo, int | None, list[str] | None], Event]
] = {
    "ticket_created": ticket_created,
    "ticket_changed": ticket_changed,
    "comment_created": comment_created,
    "rating": rating_given,
}
# Headers seen verbatim on nearly every request: a set lookup before any parsing.
_JSON_AS_SENT = frozenset(
    {
        JSON,
        f"{JSON}; charset=utf-8",
        f"{JSON}; charset=UTF-8",
    }
)
# Far above a real webhook (5 levels) and far below msgspec's recursion guard; checked before
# decoding because raising the recursion limit instead can crash msgspec (reliability I8).
MAX_JSON_DEPTH = 64
# Escapes go first, so that strings are then plain `"…"`: one pattern that handles escapes
# inside strings backtracks quadratically on an unterminated `"\"\"\"…`.
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_JSON_ERRORS = (msgspec.DecodeError, RecursionError, UnicodeDecodeError)
# How a NUL character can arrive: a JSON escape, a form's percent-encoding, a raw byte in a
# multipart part. A false alarm (an escaped backslash before "u0000") only costs a re-encode.
_NUL_SPELLINGS = (NUL_ESCAPE, b"%00", b"\x00")
# An int, so that `in` goes straight to memchr: a one-byte bytes needle is first tried as an
# integer, and the TypeError raised and cleared inside costs ten times the scan.
_BACKSLASH = ord("\\")


def detect_kind(payload: Mapping[str, object]) -> Kind:
    """The webhook's kind from its top-level keys."""
    for key, kind in _KIND_KEYS:
        if key in payload:
            return kind
    return "unknown"


def parse_body(body: bytes, content_type: str) -> dict[str, Any]:
    """A JSON object or form body, read in its declared charset, as a nested dict;
    `DecodeError` for anything else."""
    if content_type not in _JSON_AS_SENT:
        media = media_type(content_type)
        if media.is_form:
            return parse_form(body, content_type)
        _require_json(media)
        body = _as_utf8(body, media)
    _check_depth(body)
    try:
        payload = ANY_DECODER.decode(body)
    except _JSON_ERRORS as exc:
        raise _invalid_json(exc) from exc
    if not isinstance(payload, dict):
        raise DecodeError("unknown", "", f"expected a JSON object, got {show(payload)}")
    _refuse_duplicate_keys(body, payload)
    return payload


def _refuse_duplicate_keys(body: bytes, payload: dict[str, Any]) -> None:
    """A JSON object that names a key twice is refused at the edge (I8).

    A parser keeps one of the two values, and which one is a choice the sender and we need not
    share: `{"secret": "x", "secret": "<valid>"}` must not authenticate. Cheap on the hot path
    (about 15 µs for a 1 KB body): outside strings, every colon of a valid JSON text follows a
    key, so the body names as many keys as the decoded payload holds, or repeats one. Only a
    body that repeats one is parsed again, to name the key.
    """
    named = _STRING.sub(b"", _ESCAPE.sub(b"", body)).count(b":")
    if named == _count_keys(payload):
        return
    try:
        json.loads(body, object_pairs_hook=_unique_object)
    except _DuplicateKey as exc:
        reason = f"the key {show(exc.key)} appears twice in one object"
        raise DecodeError("unknown", "", reason) from None
    except ValueError:
        pass
    raise DecodeError("unknown", "", "a key appears twice in one object")


def _count_keys(node: dict[str, Any] | list[Any]) -> int:
    """Every key of every object in `node` (its depth is bounded by `_check_depth`)."""
    values = node.values() if node.__class__ is dict else node
    count = len(node) if node.__class__ is dict else 0
    for value in values:
        if value.__class__ is dict or value.__class__ is list:
            count += _count_keys(value)
    return count


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    unique = dict(pairs)
    if len(unique) == len(pairs):
        return unique
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    raise AssertionError("unreachable: fewer unique keys than pairs")


def decode_webhook(
    body: bytes,
    content_type: str,
    *,
    received_at: datetime,
    tz: ZoneInfo,
    company_id: int | None = None,
    warnings: list[str] | None = None,
) -> tuple[Kind, Event | None]:
    """The webhook's kind and, for the four ticket kinds, its event; raises only `DecodeError`.

    `tz` is the zone of UseDesk's naive dates; `company_id` is used when the payload has none;
    what was coerced rather than refused (a number where text belongs) is added to `warnings`.
    """
    as_sent = content_type in _JSON_AS_SENT
    if as_sent:
        try:
            # The closed schema cannot make msgspec recurse past its own depth, so the common
            # case skips the depth scan (a quarter of the decode time of a 2 KB body).
            envelope: Envelope | None = CLOSED_DECODER.decode(body)
        except _JSON_ERRORS:
            kind, envelope = _decode_tolerantly(body)
        else:
            kind = _kind_of(envelope)  # type: ignore[arg-type]
    else:
        kind, envelope = _decode_other(body, content_type)
    build = _BUILDERS.get(kind)
    if build is None or envelope is None:
        return kind, None
    if received_at.tzinfo is not UTC:
        received_at = _as_utc(received_at)
    try:
        event = build(envelope, received_at, tz, company_id, warnings)
    except Reread:
        # Rare: a closed envelope's custom field the tolerant structs read differently.
        kind, envelope = _decode_tolerantly(
            body if as_sent else _as_utf8(body, media_type(content_type))
        )
        if envelope is None:
            return kind, None
        event = _BUILDERS[kind](envelope, received_at, tz, company_id, warnings)
    # JSON spells a NUL only as an escape, so a body without a backslash holds none: one
    # memchr (40 ns for 2 KB). The search for the escape itself reads Cyrillic UTF-8 slowly (the
    # second bytes of "а" and "е" defeat its skip table): 0.7-1 µs per 2 KB body.
    if (_BACKSLASH in body and body.find(NUL_ESCAPE) >= 0) if as_sent else _may_hold_nul(body):
        return kind, without_nul(event)
    return kind, event


def _may_hold_nul(body: bytes) -> bool:
    # Three substring scans at memchr speed: a regex alternation costs several times more.
    return any(spelling in body for spelling in _NUL_SPELLINGS)


def _decode_other(body: bytes, content_type: str) -> tuple[Kind, Envelope | None]:
    media = media_type(content_type)
    if media.is_form:
        return _decode_form(body, content_type)
    _require_json(media)
    return _decode_json(_as_utf8(body, media))


def _require_json(media: MediaType) -> None:
    if not media.is_json:
        raise DecodeError(
            "unknown",
            "",
            f"unsupported content type {media.type!r}: expected {JSON} or a form",
        )


def _as_utf8(body: bytes, media: MediaType) -> bytes:
    """A JSON body in its declared charset, as UTF-8 (the only encoding msgspec reads)."""
    codec = media.codec()
    if codec is None:
        return body
    try:
        return text(body, codec, "JSON body").encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, which UTF-7 can spell
        raise DecodeError("unknown", "", f"JSON body is not valid {codec}") from exc


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _check_depth(body: bytes) -> None:
    """Refuse JSON nested deeper than about MAX_JSON_DEPTH, in C-speed passes over the bytes."""
    brackets = body.translate(None, _NOT_BRACKET)
    if len(brackets) <= MAX_JSON_DEPTH:
        return
    # Brackets inside strings are not structure: drop the strings, then the non-brackets.
    brackets = _STRING.sub(b"", _ESCAPE.sub(b"", body)).translate(None, _NOT_BRACKET)
    # Each pass strips every innermost pair, so after N passes only depth > N remains.
    for _ in range(MAX_JSON_DEPTH):
        stripped = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if stripped == brackets:
            break
        brackets = stripped
    if brackets:
        raise DecodeError(
            "unknown", "", f"JSON is malformed or nests deeper than {MAX_JSON_DEPTH} levels"
        )


def _kind_of(parsed: Envelope | KindKeys) -> Kind:
    """`detect_kind` for a decoded body, same precedence as `_KIND_KEYS`; spelled out because
    a `getattr` loop over those keys took a third of a small webhook's decode time."""
    unset = msgspec.UNSET
    if parsed.chat_id is not unset:
        return "chat"
    if parsed.ping is not unset:
        return "ping"
    if parsed.ticket is not unset:
        return "ticket_created"
    if parsed.trigger is not unset:
        return "ticket_changed"
    if parsed.comment is not unset:
        return "comment_created"
    return "unknown" if parsed.csi is unset else "rating"


def _decode_json(body: bytes) -> tuple[Kind, Envelope | None]:
    """`decode_webhook`'s JSON path, for a content type spelled unusually."""
    try:
        envelope: Envelope = CLOSED_DECODER.decode(body)
    except _JSON_ERRORS:
        return _decode_tolerantly(body)
    return _kind_of(envelope), envelope


def _decode_tolerantly(body: bytes) -> tuple[Kind, Envelope | None]:
    _check_depth(body)
    try:
        envelope = ENVELOPE_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        return _json_failure(body, exc), None
    except _JSON_ERRORS as exc:
        raise _invalid_json(exc) from exc
    kind = _kind_of(envelope)
    return kind, envelope if kind in TICKET_KINDS else None


def _json_failure(body: bytes, error: msgspec.ValidationError) -> Kind:
    """The kind of a body the envelope refused; raises unless that kind carries no event
    (a chat payload's `ticket` has its own shape and must not fail as a ticket)."""
    try:
        kind = _kind_of(KIND_KEYS_DECODER.decode(body))
    except msgspec.ValidationError as exc:
        raise translate("unknown", str(exc), _generic(body)) from exc
    except _JSON_ERRORS as exc:
        raise _invalid_json(exc) from exc
    if kind not in TICKET_KINDS:
        return kind
    raise translate(kind, str(error), _generic(body)) from error


def _invalid_json(error: Exception) -> DecodeError:
    # A UnicodeDecodeError's own text gives an offset inside one string, which misleads.
    # msgspec's " - at `$[...]`" suffix names no usable path in a body that is not an object.
    reason = "not valid UTF-8" if isinstance(error, UnicodeDecodeError) else str(error)
    return DecodeError("unknown", "", f"not valid JSON: {reason.partition(' - at `')[0]}")


def _generic(body: bytes) -> Any:
    try:
        return ANY_DECODER.decode(body)
    except _JSON_ERRORS:
        return MISSING


def _decode_form(body: bytes, content_type: str) -> tuple[Kind, Envelope | None]:
    payload = parse_form(body, content_type)
    kind = detect_kind(payload)
    if kind not in TICKET_KINDS:
        return kind, None
    try:
        return kind, msgspec.convert(payload, Envelope, strict=False)
    except msgspec.ValidationError as exc:
        raise translate(kind, str(exc), payload) from exc
