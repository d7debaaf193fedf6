"""Adversarial, structure-aware fuzzing of body parsing and decoding (I8): only DecodeError.

Beside the decoder's own property tests (mutated webhooks, arbitrary bytes), these aim at the
places a parser breaks: the depth pre-check against brackets hidden in strings and escapes
(checked against the standard library's parser), duplicate keys (refused at the edge, whatever
their spelling), numbers beyond every machine range, invalid UTF-8 inside otherwise valid
structure, and PHP bracket-key bombs in both form encodings. `make chaos` runs them with ten
times the examples and counts them as bad inputs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import DecodeError
from shared.usedesk import MAX_JSON_DEPTH, decode_webhook, parse_body
from shared.usedesk.forms import MAX_DEPTH, MAX_FIELDS, parse_form
from tests.helpers.checker import record

JSON = "application/json"
URLENCODED = "application/x-www-form-urlencoded"
BOUNDARY = "XyZzy"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
MOSCOW = ZoneInfo("Europe/Moscow")
EXAMPLES = 1000 if os.environ.get("DESKLEDGER_CHAOS") else 100
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

tried = {"inputs": 0, "crashes": 0}


@pytest.fixture(scope="module", autouse=True)
def _count_inputs() -> Iterator[None]:
    yield
    record("hostile decoding", bad_inputs=tried["inputs"], crashes=tried["crashes"])


def only_decode_errors(call: Callable[[], Any]) -> Any:
    """`call()`'s result, None after a DecodeError; any other exception is a crash."""
    tried["inputs"] += 1
    try:
        return call()
    except DecodeError:
        return None
    except Exception:
        tried["crashes"] += 1
        raise


def every_reader(body: bytes, content_type: str) -> Any:
    parsed = only_decode_errors(lambda: parse_body(body, content_type))
    only_decode_errors(
        lambda: decode_webhook(body, content_type, received_at=datetime.now(UTC), tz=MOSCOW)
    )
    return parsed


# --- JSON ------------------------------------------------------------------------------------

KINDS = st.sampled_from(["ticket", "trigger", "comment", "csi", "ping", "chat_id", "secret"])
# Strings that look like structure: brackets, quotes and escapes the depth check must see past.
TRICKY_TEXT = st.text(alphabet='[]{}"\\:,/ab\u0000\u2028é', max_size=12)
HUGE = st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, -(10**30)]) | st.integers()
SCALARS = (
    st.none()
    | st.booleans()
    | HUGE
    | st.floats(allow_nan=False, allow_infinity=False)
    | TRICKY_TEXT
)


def nested(depth: int, leaf: Any, as_list: list[bool]) -> Any:
    for wrap_in_list in as_list[:depth]:
        leaf = [leaf] if wrap_in_list else {"k": leaf}
    return leaf


@st.composite
def deep_documents(draw: st.DrawFn) -> tuple[bytes, int]:
    """A webhook-shaped object with one branch nested `depth` deep around tricky strings."""
    depth = draw(st.integers(0, 2 * MAX_JSON_DEPTH + 8))
    shapes = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    leaf = draw(st.lists(SCALARS, max_size=3))
    document = {draw(KINDS): {"id": draw(HUGE), "deep": nested(depth, leaf, shapes)}}
    # The top object and its kind object add two levels; the leaf list one more.
    return json.dumps(document).encode(), depth + 3


@FUZZ
@given(deep_documents())
def test_depth_check_sees_past_brackets_in_strings(case: tuple[bytes, int]) -> None:
    """Within MAX_JSON_DEPTH a document reads exactly as the standard library reads it; far
    beyond it (twice: a pass of the check can strip a `[]` and the `{}` around it at once, so
    the limit is "about" MAX_JSON_DEPTH) it is refused before msgspec recurses."""
    body, depth = case
    parsed = every_reader(body, JSON)
    if depth <= MAX_JSON_DEPTH:
        assert parsed == json.loads(body), "refused or changed a document within the depth limit"
    elif depth > 2 * MAX_JSON_DEPTH:
        assert parsed is None, f"accepted a document {depth} levels deep"


@st.composite
def duplicate_keys(draw: st.DrawFn) -> bytes:
    """Objects whose keys repeat (secret, the kind, the natural id), at the top and inside."""
    kind = draw(KINDS)
    inner = [("id", draw(HUGE)) for _ in range(draw(st.integers(1, 3)))]
    inner_text = ",".join(f'"{k}":{json.dumps(v)}' for k, v in inner)
    members = [f'"{kind}":{{{inner_text}}}', '"secret":"s3cr3t-value"']
    for _ in range(draw(st.integers(0, 4))):
        members.append(f'"{draw(KINDS)}":{json.dumps(draw(SCALARS))}')
    members = draw(st.permutations(members))
    return ("{" + ",".join(members) + "}").encode()


def _names_a_key_twice(body: bytes) -> bool:
    repeated = False

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        repeated = repeated or len({key for key, _ in pairs}) != len(pairs)
        return dict(pairs)

    json.loads(body, object_pairs_hook=pairs_hook)
    return repeated


@FUZZ
@given(duplicate_keys())
def test_duplicate_keys_are_refused_at_the_edge(body: bytes) -> None:
    parsed = every_reader(body, JSON)
    if _names_a_key_twice(body):
        assert parsed is None, "accepted an object that names a key twice"
    else:
        assert parsed == json.loads(body)


BAD_UTF8 = st.sampled_from(
    [b"\xc3\x28", b"\xff", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]
)


@st.composite
def broken_utf8(draw: st.DrawFn) -> bytes:
    """Valid webhook structure with an invalid UTF-8 sequence inside a string or a key."""
    bad = draw(BAD_UTF8)
    where = draw(st.sampled_from(["key", "value", "secret"]))
    key = b"sub" + bad + b"ject" if where == "key" else b"subject"
    value = b"x" + bad if where == "value" else b"x"
    secret = b"s" + bad if where == "secret" else b"s3cr3t-value"
    return b'{"secret":"' + secret + b'","ticket":{"id":1,"' + key + b'":"' + value + b'"}}'


@FUZZ
@given(broken_utf8())
def test_invalid_utf8_anywhere_is_a_decode_error(body: bytes) -> None:
    assert every_reader(body, JSON) is None


@FUZZ
@given(BAD_UTF8, st.sampled_from(["key", "value"]), st.booleans())
def test_invalid_utf8_in_forms_is_a_decode_error(bad: bytes, where: str, raw: bool) -> None:
    """Raw bytes or percent-encoded (`%C3%28`): the form is refused either way."""
    encoded = bad if raw else quote(bad).encode()
    key, value = (b"ticket[" + encoded + b"]", b"1") if where == "key" else (b"ticket[id]", encoded)
    assert every_reader(key + b"=" + value, URLENCODED) is None
    part = b'Content-Disposition: form-data; name="' + key + b'"\r\n\r\n' + value
    body = b"--" + BOUNDARY.encode() + b"\r\n" + part + b"\r\n--" + BOUNDARY.encode() + b"--\r\n"
    if raw:
        assert every_reader(body, MULTIPART) is None
    else:
        every_reader(body, MULTIPART)  # percent signs are plain text in multipart


# --- forms -----------------------------------------------------------------------------------

SEGMENTS = st.sampled_from(["", "0", "1", "007", "99999999999", "a", "]", "[", "é", " ", "-1"])


@st.composite
def bracket_keys(draw: st.DrawFn) -> str:
    """PHP keys built to hurt: very deep, unclosed, stray `]`, huge or odd indexes, empty."""
    head = draw(st.sampled_from(["ticket", "trigger", "secret", "", "[", "a]"]))
    depth = draw(st.sampled_from([0, 1, 3, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 500]))
    segments = "".join(f"[{draw(SEGMENTS)}]" for _ in range(min(depth, 40)))
    segments += "[]" * max(0, depth - 40)
    tail = draw(st.sampled_from(["", "[", "]", "x", "[0]x"]))
    return head + segments + tail


@st.composite
def forms(draw: st.DrawFn) -> list[tuple[str, str]]:
    pairs = draw(st.lists(st.tuples(bracket_keys(), TRICKY_TEXT), min_size=1, max_size=12))
    if draw(st.booleans()):  # the same key with a scalar, then an array, then a scalar again
        key = draw(bracket_keys())
        pairs += [(key, "1"), (key + "[a]", "2"), (key, "3")]
    return pairs


def urlencoded(pairs: list[tuple[str, str]]) -> bytes:
    return "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs).encode()


def multipart(pairs: list[tuple[str, str]]) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k.replace(chr(34), "")}"'
        f"\r\n\r\n{v}\r\n"
        for k, v in pairs
    ]
    return ("".join(parts) + f"--{BOUNDARY}--\r\n").encode()


def plain_tree(node: Any, depth: int = 0) -> int:
    """The depth of a parsed form, checking it holds only dicts, lists and strings."""
    if isinstance(node, str):
        return depth
    assert type(node) in (dict, list), type(node)
    children = node.values() if isinstance(node, dict) else node
    return max((plain_tree(child, depth + 1) for child in children), default=depth)


@FUZZ
@given(forms(), st.booleans())
def test_bracket_key_bombs_cost_a_decode_error_or_a_plain_bounded_tree(
    pairs: list[tuple[str, str]], as_multipart: bool
) -> None:
    if as_multipart:
        body, content_type = multipart(pairs), MULTIPART
    else:
        body, content_type = urlencoded(pairs), URLENCODED
    parsed = only_decode_errors(lambda: parse_form(body, content_type))
    every_reader(body, content_type)
    if parsed is not None:
        assert plain_tree(parsed) <= MAX_DEPTH + 1


@pytest.mark.parametrize("fields", [MAX_FIELDS, MAX_FIELDS + 1])
@pytest.mark.parametrize("content_type", [URLENCODED, MULTIPART])
def test_the_field_cap_is_exact(fields: int, content_type: str) -> None:
    pairs = [(f"ticket[custom_fields][{i}][id]", str(i)) for i in range(fields)]
    body = multipart(pairs) if content_type == MULTIPART else urlencoded(pairs)
    parsed = only_decode_errors(lambda: parse_form(body, content_type))
    assert (parsed is not None) == (fields <= MAX_FIELDS)


NAMES = st.sampled_from(
    [
        'name="ticket[id]"',
        "name*=utf-8''ticket%5Bid%5D",
        "name*=utf-8''%FF%FE",
        'name="ticket[id]"; filename="x.txt"',
        "name=",
        "",
    ]
)


@st.composite
def broken_multipart(draw: st.DrawFn) -> tuple[bytes, str]:
    """Multipart bodies broken where parsers trip: boundaries, headers, RFC 2231 names."""
    boundary = draw(st.sampled_from([BOUNDARY, "", "a" * 71, "é", "b c", '"q"']))
    header = draw(
        st.sampled_from(["Content-Disposition: form-data; ", "Content-Disposition: attachment; "])
    )
    header = draw(st.sampled_from([header + draw(NAMES), "no colon here", ""]))
    body = f"--{BOUNDARY}\r\n{header}\r\n\r\n1\r\n"
    body += draw(st.sampled_from([f"--{BOUNDARY}--\r\n", f"--{BOUNDARY}", "", f"--{BOUNDARY}--"]))
    return body.encode(), f"multipart/form-data; boundary={boundary}"


@FUZZ
@given(broken_multipart())
def test_broken_multipart_is_a_decode_error_or_a_form(case: tuple[bytes, str]) -> None:
    every_reader(*case)


@FUZZ
@given(
    st.sampled_from(
        [
            "application/json; charset=latin-1",
            "APPLICATION/JSON",
            "application/vnd.usedesk+json",
            "application/x-www-form-urlencoded; charset=koi8-r",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "text/plain",
            "",
            ";;;",
            "application/json; boundary=" + "x" * 5000,
        ]
    ),
    st.sampled_from([b'{"ticket":{"id":1}}', b"ticket[id]=1", b"", b"\xff\xfe"]),
)
def test_odd_content_types_are_a_decode_error_or_parsed(content_type: str, body: bytes) -> None:
    every_reader(body, content_type)
