"""Multipart header parameters are bounded before the quadratic `email` parser sees them."""

from __future__ import annotations

import time

import pytest

from shared.errors import DecodeError
from shared.usedesk.forms import MAX_PART_HEAD_BYTES, parse_form
from shared.usedesk.media import MAX_HEADER_PARAMS

MULTIPART = "multipart/form-data; boundary=XyZ"


def form(disposition: str, value: bytes = b"1") -> bytes:
    return f"--XyZ\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n--XyZ--"


def refusal(body: bytes, content_type: str = MULTIPART) -> str:
    with pytest.raises(DecodeError) as caught:
        parse_form(body, content_type)
    return caught.value.reason


def test_a_megabyte_of_parameters_is_refused_at_once() -> None:
    """It took the `email` parser 24 s: before authentication, for anyone."""
    body = form('form-data; name="x"' + "; a=b" * 200_000)
    started = time.perf_counter()
    assert refusal(body) == f"multipart part headers exceed {MAX_PART_HEAD_BYTES} bytes"
    assert time.perf_counter() - started < 1.0


def test_more_parameters_than_the_cap_are_refused_even_in_a_short_header() -> None:
    many = 'form-data; name="x"' + ";" * MAX_HEADER_PARAMS
    reason = f"Content-Disposition has more than {MAX_HEADER_PARAMS} parameters"
    assert refusal(form(many)) == reason
    assert parse_form(form(many[:-1]), MULTIPART) == {"x": "1"}


def test_the_content_type_parameters_are_bounded_too() -> None:
    content_type = 'multipart/form-data; boundary="' + ";" * 8000 + '"'
    assert refusal(form('form-data; name="x"'), content_type) == (
        f"Content-Type has more than {MAX_HEADER_PARAMS} parameters"
    )


def test_a_head_just_under_the_cap_is_read() -> None:
    name = "k" * (MAX_PART_HEAD_BYTES - 100)
    assert parse_form(form(f'form-data; name="{name}"'), MULTIPART) == {name: "1"}


def test_rfc2231_names_and_file_parts_still_read_as_before() -> None:
    assert parse_form(form("form-data; name*=utf-8''ticket%5Bid%5D"), MULTIPART) == {
        "ticket": {"id": "1"}
    }
    assert parse_form(form('form-data; name="f"; filename="a.txt"'), MULTIPART) == {}


def test_a_megabyte_of_worst_case_heads_costs_little_per_kilobyte() -> None:
    """8 KB heads full of quotes and 32 `;` each, as many as fit in 1 MB: still linear."""
    head = 'form-data; name="x' + ';"' * 16 + '"' * 7900
    part = f"--XyZ\r\nContent-Disposition: {head}\r\n\r\n1\r\n".encode()
    body = part * (1024 * 1024 // len(part)) + b"--XyZ--"
    started = time.perf_counter()
    parse_form(body, MULTIPART)
    assert time.perf_counter() - started < 2.0  # ~30 ms here; seconds would be quadratic
