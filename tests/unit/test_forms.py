"""Form bodies rebuilt into the nested dicts and lists a JSON body would have (`usedesk.forms`)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import DecodeError
from shared.usedesk.forms import MAX_DEPTH, MAX_FIELDS, parse_form
from shared.usedesk.media import FORMS
from tests.helpers.php_forms import URLENCODED, http_build_query, multipart

MULTIPART = "multipart/form-data; boundary=XyZ"


def part(name: str, value: bytes, extra: str = "") -> bytes:
    head = f'--XyZ\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'
    return head.encode() + value + b"\r\n"


def failure(body: bytes, content_type: str = URLENCODED) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        parse_form(body, content_type)
    return caught.value


def test_form_content_types_are_the_two_form_media_types() -> None:
    assert sorted(FORMS) == [URLENCODED, "multipart/form-data"]


def test_bracket_keys_nest_and_numeric_indexes_become_lists() -> None:
    body = (
        b"secret=abc&ticket%5Bid%5D=7&ticket[custom_fields][0][name]=Order+number"
        b"&ticket[custom_fields][1][name]=%D0%9F%D0%BB&ticket[custom_fields][1][value]="
    )
    assert parse_form(body, URLENCODED) == {
        "secret": "abc",
        "ticket": {
            "id": "7",
            "custom_fields": [{"name": "Order number"}, {"name": "Пл", "value": ""}],
        },
    }


def test_empty_brackets_append_after_the_highest_index() -> None:
    assert parse_form(b"a[]=x&a[]=y&b[5]=p&b[]=q", URLENCODED) == {
        "a": ["x", "y"],
        "b": {"5": "p", "6": "q"},
    }


def test_sparse_or_named_keys_stay_a_dict_and_indexes_are_ordered() -> None:
    assert parse_form(b"a[1]=x&a[0]=y&c[01]=z&d[x]=1", URLENCODED) == {
        "a": ["y", "x"],
        "c": {"01": "z"},
        "d": {"x": "1"},
    }


def test_the_last_of_repeated_keys_wins_as_in_php() -> None:
    assert parse_form(b"a=1&a=2&b=x&b[c]=y&d[e]=1&d=2", URLENCODED) == {
        "a": "2",
        "b": {"c": "y"},
        "d": "2",
    }


def test_raw_utf8_and_keys_without_value_are_read() -> None:
    assert parse_form("имя=Марина&flag".encode(), f"{URLENCODED}; charset=UTF-8") == {
        "имя": "Марина",
        "flag": "",
    }


@pytest.mark.parametrize(
    ("body", "path", "reason"),
    [
        (b"a[b=1", "a[b", "form key has an unclosed '['"),
        (b"[a]=1", "[a]", "form key has no name before '['"),
        (b"a[b]c=1", "a[b]c", "form key has text after ']'"),
        (b"a=%FF", "", "form body is not valid UTF-8"),
        (b"a=\xff", "", "form body is not valid UTF-8"),
    ],
)
def test_malformed_urlencoded_bodies_name_the_key(body: bytes, path: str, reason: str) -> None:
    error = failure(body)
    assert (error.kind, error.path, error.reason) == ("unknown", path, reason)


def test_nesting_and_field_count_are_bounded() -> None:
    deep = b"a" + b"[x]" * MAX_DEPTH + b"=1"
    assert "deeper than 32" in str(failure(deep))
    assert parse_form(b"a" + b"[x]" * (MAX_DEPTH - 1) + b"=1", URLENCODED)["a"]["x"]["x"]
    many = b"&".join(b"k%d=1" % i for i in range(MAX_FIELDS + 1))
    assert str(failure(many)) == f"unknown: form has more than {MAX_FIELDS} fields"


def test_multipart_parts_nest_like_urlencoded_keys() -> None:
    body = part("ticket[id]", b"7") + part("a[]", b"line1\r\nline2") + b"--XyZ--\r\n"
    assert parse_form(body, MULTIPART) == {"ticket": {"id": "7"}, "a": ["line1\r\nline2"]}
    quoted = 'multipart/form-data; boundary="XyZ"'
    assert parse_form(b"preamble\r\n" + body + b"epilogue", quoted) == parse_form(body, MULTIPART)


def test_multipart_file_uploads_are_left_out_like_php_does() -> None:
    body = part("f", b"\x00\xff", '; filename="x.bin"') + part("a", b"1") + b"--XyZ--\r\n"
    assert parse_form(body, MULTIPART) == {"a": "1"}


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (part("a", b"1"), MULTIPART, "multipart body has no closing boundary"),
        (part("a", b"1") + b"--XyZ--", "multipart/form-data", "needs a boundary"),
        (b"--XyZ\r\nX-No: name\r\n\r\n1\r\n--XyZ--", MULTIPART, "without a form-data name"),
        (b"--XyZ\r\n--XyZ--", MULTIPART, "multipart part without headers"),
        (part("a", b"\xff") + b"--XyZ--", MULTIPART, "is not valid UTF-8"),
        (b"a=1", "text/plain", "expected a form content type, got 'text/plain'"),
    ],
)
def test_malformed_multipart_bodies_are_decode_errors(
    body: bytes, content_type: str, reason: str
) -> None:
    assert reason in str(failure(body, content_type))


def test_the_php_helper_drops_nulls_and_empty_arrays_and_casts_booleans() -> None:
    payload = {"a": None, "b": [], "c": {}, "d": True, "e": False, "f": 1.5, "g": [0, None, 2]}
    assert parse_form(http_build_query(payload), URLENCODED) == {
        "d": "1",
        "e": "",
        "f": "1.5",
        "g": {"0": "0", "2": "2"},
    }


# Letters, digits and a few marks: PHP itself mangles spaces, dots and brackets in names.
_keys = st.text(st.characters(whitelist_categories=["L", "N"]) | st.sampled_from("_-"), min_size=1)
_leaves = st.text(st.characters(blacklist_categories=["Cs"])) | st.integers().map(str)
_trees = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, min_size=1, max_size=4)
        | st.dictionaries(_keys.filter(lambda k: not k.isdigit()), inner, min_size=1, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(_keys.filter(lambda k: not k.isdigit()), _trees, max_size=5))
def test_any_php_style_form_reads_back_as_its_nested_structure(payload: dict[str, Any]) -> None:
    assert parse_form(http_build_query(payload), URLENCODED) == payload
    assert parse_form(*multipart(payload)) == payload


@given(st.binary(max_size=300), st.sampled_from([URLENCODED, MULTIPART, "multipart/form-data"]))
def test_arbitrary_bytes_give_a_dict_or_a_decode_error(body: bytes, content_type: str) -> None:
    try:
        parsed: object = parse_form(body, content_type)
    except DecodeError as error:
        parsed = error.kind
    assert isinstance(parsed, dict) or parsed == "unknown"
