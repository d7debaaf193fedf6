"""The ingress's `fastparse.parse` answers exactly as `parse_body` does (I8): the same payload,
the same refusal, for duplicate keys hidden behind colons in strings or escapes, for depth at and
past the limit, and for every corpus body."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingress.fastparse import parse
from shared.errors import DecodeError
from shared.usedesk import MAX_JSON_DEPTH, parse_body
from tests.benchmarks.corpus import generate

JSON = "application/json"


def answer(reader: Any, body: bytes, content_type: str = JSON) -> tuple[str, Any]:
    try:
        return "ok", reader(body, content_type)
    except DecodeError as exc:
        return "refused", str(exc)


def same(body: bytes, content_type: str = JSON) -> tuple[str, Any]:
    ours = answer(parse, body, content_type)
    assert ours == answer(parse_body, body, content_type)
    return ours


def test_every_corpus_body_parses_as_parse_body_parses_it() -> None:
    for webhook in generate(300):
        assert same(webhook.body)[0] == "ok"


def nested(depth: int, leaf: Any = 1) -> Any:
    for level in range(depth):
        leaf = [leaf] if level % 2 else {"k": leaf}
    return leaf


@pytest.mark.parametrize(
    "depth", [MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 2 * MAX_JSON_DEPTH, 900]
)
def test_depth_is_bounded_as_parse_body_bounds_it(depth: int) -> None:
    body = json.dumps({"ping": nested(depth)}).encode()
    outcome, _ = same(body)
    if depth >= 2 * MAX_JSON_DEPTH:
        assert outcome == "refused"


@pytest.mark.parametrize(
    "body",
    [
        b'{"secret":"a","secret":"b"}',
        b'{"secret":"a:b","ticket":{"id":1,"id":2}}',
        # The dropped duplicate's colons would balance an escaped colon kept elsewhere.
        b'{"note":"x\\u003ay","a":1,"a":2}',
        b'{"note":"x\\u003Ay","ticket":{"a":"1","a":"2"}}',
        b'{"a":[{"b":1,"b":{"c":"::"}}],"secret":"s"}',
        b'{"a":{"k":"1:2"},"a":{"k":"3"}}',
        # Valid, with colons only inside strings and escapes.
        b'{"url":"http://x:8080/a?b=c:d","t":"12:00:00","e":"\\u003a"}',
        b'{"\\u003a":":","x":[":",{":":":"}]}',
        # Not objects, not JSON, not UTF-8.
        b"[1,2]",
        b'"x"',
        b'{"a":',
        b'{"a":"\xff"}',
        b"",
    ],
)
def test_duplicates_and_malformed_bodies_get_parse_bodys_answer(body: bytes) -> None:
    same(body)


def test_other_content_types_are_parse_bodys() -> None:
    same(b"secret=a&ping=1", "application/x-www-form-urlencoded")
    same('{"secret":"ж"}'.encode("cp1251"), "application/json; charset=windows-1251")


KEYS = st.sampled_from(["a", "b", "secret", "a:b", ":", "ticket"])
TEXT = st.text(alphabet=':"\\{}[],ab\u0000é', max_size=6)
LEAVES = st.none() | st.booleans() | st.integers() | TEXT


@st.composite
def objects_with_repeats(draw: st.DrawFn) -> bytes:
    """JSON text written by hand, so that keys may repeat at any level."""

    def value(level: int) -> str:
        choice = draw(st.integers(0, 3 if level < 4 else 1))
        if choice <= 1:
            return json.dumps(draw(LEAVES), ensure_ascii=draw(st.booleans()))
        if choice == 2:
            return "[" + ",".join(value(level + 1) for _ in range(draw(st.integers(0, 3)))) + "]"
        return obj(level + 1)

    def obj(level: int) -> str:
        keys = draw(st.lists(KEYS, max_size=4))
        return "{" + ",".join(f"{json.dumps(k)}:{value(level)}" for k in keys) + "}"

    text = obj(0)
    if draw(st.booleans()):
        text = text.replace(":", "\\u003a", 1) if '"' in text else text
    return text.encode()


@settings(max_examples=400)
@given(objects_with_repeats())
def test_any_object_gets_parse_bodys_answer(body: bytes) -> None:
    same(body)
