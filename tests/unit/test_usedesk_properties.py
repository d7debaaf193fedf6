"""Properties: any valid webhook decodes alike as JSON and as forms; nothing but DecodeError."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import DecodeError
from shared.events import TicketChanged
from shared.usedesk import Kind, decode_webhook, detect_kind, parse_body
from shared.usedesk.wire import text
from tests.helpers.php_forms import URLENCODED, http_build_query, multipart
from tests.helpers.usedesk import JSON, MOSCOW, RECEIVED

# kind → (payload part, its natural id keys, the event's fields that carry them)
NATURAL_IDS = {
    "ticket_created": ("ticket", ("id",), ("ticket_id",)),
    "ticket_changed": ("trigger", ("id", "ticket_id"), ("change_id", "ticket_id")),
    "comment_created": ("comment", ("id", "ticket_id"), ("comment_id", "ticket_id")),
    "rating": ("csi", ("id", "ticket_id"), ("rating_id", "ticket_id")),
}

ids = st.integers(1, 2**62).flatmap(lambda i: st.sampled_from([i, str(i)]))
# Statuses land in 32-bit columns: the decoder refuses wider ones (test_worker_poison.py).
statuses = st.integers(1, 2**31 - 1).flatmap(lambda i: st.sampled_from([i, str(i)]))
texts = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
dates = st.datetimes(datetime(2001, 1, 1), datetime(2099, 12, 31)).map(
    lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S")
)
flags = st.sampled_from([0, 1, "0", "1", True, False, None])
values = (
    texts | st.integers(-(2**40), 2**40) | st.booleans() | st.lists(texts, min_size=1, max_size=3)
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


def record(
    required: dict[str, st.SearchStrategy[Any]], **optional: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(required, optional=optional)


custom_fields = st.lists(
    record({}, id=maybe(ids), name=maybe(texts), value=maybe(texts | st.integers())), max_size=3
)
clients = record(
    {},
    id=maybe(ids),
    name=maybe(texts),
    emails=st.lists(record({}, email=maybe(texts)), max_size=2),
    phones=st.lists(
        record({}, phone=maybe(texts | st.integers(0, 10**12)), type=texts), max_size=2
    ),
)
tickets = record(
    {"id": ids},
    status_id=maybe(statuses),
    subject=maybe(texts),
    client_id=maybe(ids),
    assignee_id=maybe(ids),
    group=maybe(ids | st.just("0")),
    channel_id=maybe(ids),
    email=maybe(texts),
    additional_id=maybe(texts | st.integers(0, 10**6)),
    message=maybe(texts),
    published_at=maybe(dates),
    last_updated_at=maybe(dates),
    company_id=maybe(ids),
    custom_fields=custom_fields,
    client=clients,
)
changes = record({"target": texts}, value=maybe(values), old_value=maybe(values))
triggers = record(
    {"id": ids, "ticket_id": ids},
    trigger_id=maybe(ids),
    user_id=maybe(ids),
    data=st.lists(changes, max_size=4),
    changed_at=maybe(dates),
    old_status=maybe(statuses),
    new_status=maybe(statuses),
    company_id=maybe(ids),
)
comments = record(
    {"id": ids, "ticket_id": ids},
    message=maybe(texts),
    type=maybe(st.sampled_from(["public", "private"]) | texts),
    user_id=maybe(ids),
    client_id=maybe(ids),
    is_first=flags,
    delivered=flags,
    published_at=maybe(dates),
    **{"from": maybe(st.sampled_from(["user", "client", "trigger"]))},
)
ratings = record(
    {"id": ids, "ticket_id": ids},
    client_id=maybe(ids),
    user_id=maybe(ids),
    rating=maybe(st.integers(1, 3)),
    company_id=maybe(ids),
    ticket_comment_id=maybe(ids),
    comment=maybe(texts),
    created_at=maybe(dates),
    updated_at=maybe(dates),
)
extras: dict[str, st.SearchStrategy[Any]] = {
    "client": clients,
    "custom_fields": custom_fields,
    "custom_blocks": st.lists(record({"name": texts, "url": texts, "secret_key": texts})),
}
webhooks = st.one_of(
    record({"secret": texts, "ticket": tickets}, **extras),
    record({"secret": texts, "trigger": triggers}, **extras),
    record({"secret": texts, "comment": comments}, **extras),
    record({"secret": texts, "csi": ratings}),
)


def decode(body: bytes, content_type: str = JSON) -> tuple[Kind, Any]:
    return decode_webhook(body, content_type, received_at=RECEIVED, tz=MOSCOW, company_id=7)


@given(webhooks)
def test_a_valid_webhook_decodes_alike_as_json_and_as_both_php_forms(
    payload: dict[str, Any],
) -> None:
    kind, event = decode(json.dumps(payload).encode())
    assert kind == detect_kind(payload)
    part, keys, fields = NATURAL_IDS[kind]
    assert [getattr(event, field) for field in fields] == [int(payload[part][k]) for k in keys]
    assert event.occurred_at.tzinfo is UTC
    # A form carries every scalar as text: the JSON types a change value had are what it loses.
    as_form = (kind, without_json_types(event))
    assert decode(http_build_query(payload), URLENCODED) == as_form
    assert decode(*multipart(payload)) == as_form


def without_json_types(event: Any) -> Any:
    """`event` as a form body would give it: a scalar change value with no JSON of its own (an
    array stays one: PHP's form arrays carry it), the other keys of a change entry as text."""
    if not isinstance(event, TicketChanged):
        return event
    changes = tuple(
        msgspec.structs.replace(
            change,
            value_json=_array_only(change.value_json),
            old_value_json=_array_only(change.old_value_json),
            extra={key: text(value) for key, value in change.extra.items() if value is not None},
        )
        for change in event.changes
    )
    return msgspec.structs.replace(event, changes=changes)


kind_values = st.none() | st.integers() | texts | st.dictionaries(texts, st.integers(), max_size=2)


@given(
    st.dictionaries(
        st.sampled_from(["chat_id", "ping", "ticket", "trigger", "comment", "csi", "x"]),
        kind_values,
    )
)
def test_the_decoded_kind_is_always_the_detected_kind(payload: dict[str, Any]) -> None:
    try:
        kind: str = decode(json.dumps(payload).encode())[0]
    except DecodeError as error:
        kind = error.kind
    assert kind == detect_kind(payload)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(2**63, 2**300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


def _slots(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) of a JSON tree, so that a mutation can hit any of them."""
    entries = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in list(entries):
        yield node, key
        if isinstance(child, dict | list) and child:
            yield from _slots(child)


def _mutate(payload: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    mutated = copy.deepcopy(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        slots = list(_slots(mutated))
        if not slots:
            break
        container, key = data.draw(st.sampled_from(slots))
        action = data.draw(st.sampled_from(["replace", "drop", "nest"]))
        if action == "drop":
            del container[key]
        elif action == "nest":
            as_list = data.draw(st.booleans())
            for _ in range(data.draw(st.integers(1, 150))):
                container[key] = [container[key]] if as_list else {"a": container[key]}
        else:
            container[key] = data.draw(json_values)
    return mutated


def _corrupt(body: bytes, data: st.DataObject) -> bytes:
    action = data.draw(st.sampled_from(["keep", "truncate", "flip", "invalid_utf8", "deep"]))
    where = data.draw(st.integers(0, max(len(body) - 1, 0)))
    if action == "truncate":
        return body[:where]
    if action == "flip":
        return (
            body[:where] + bytes([body[where] ^ data.draw(st.integers(1, 255))]) + body[where + 1 :]
        )
    if action == "invalid_utf8":
        return body[:where] + b"\xc3\x28\xff" + body[where:]
    if action == "deep":
        return body[:where] + b"[" * data.draw(st.integers(60, 5000)) + body[where:]
    return body


def _only_decode_errors(call: Callable[[], object]) -> None:
    with contextlib.suppress(DecodeError):
        call()


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(webhooks, st.data())
def test_mutated_webhooks_raise_nothing_but_decode_error(
    payload: dict[str, Any], data: st.DataObject
) -> None:
    mutated = _mutate(payload, data)
    body = _corrupt(json.dumps(mutated).encode(), data)
    _only_decode_errors(lambda: decode(body))
    _only_decode_errors(lambda: parse_body(body, JSON))
    _only_decode_errors(lambda: decode(http_build_query(mutated), URLENCODED))
    _only_decode_errors(lambda: decode(*multipart(mutated)))


@given(
    st.binary(max_size=500), st.sampled_from([JSON, URLENCODED, "multipart/form-data; boundary=b"])
)
def test_arbitrary_bytes_raise_nothing_but_decode_error(body: bytes, content_type: str) -> None:
    _only_decode_errors(lambda: decode(body, content_type))
    _only_decode_errors(lambda: parse_body(body, content_type))


def _array_only(sent_json: str | None) -> str | None:
    return sent_json if sent_json is not None and sent_json[:1] in "[{" else None
