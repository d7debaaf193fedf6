"""`shared.usedesk.media`: the one reader of a `Content-Type` header."""

from __future__ import annotations

import pytest

from shared.errors import DecodeError
from shared.usedesk.media import JSON, MAX_HEADER_PARAMS, MULTIPART, MediaType, media_type


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/json", MediaType(JSON)),
        (" Application/JSON ", MediaType(JSON)),
        ("application/json; charset=windows-1251", MediaType(JSON, charset="windows-1251")),
        ('multipart/form-data; boundary="a;b"', MediaType(MULTIPART, boundary="a;b")),
        ("multipart/form-data; boundary*=utf-8''x%20y", MediaType(MULTIPART, boundary="x y")),
    ],
)
def test_media_type_and_parameters(header: str, expected: MediaType) -> None:
    assert media_type(header) == expected


def test_json_and_forms_are_told_apart() -> None:
    assert media_type("application/vnd.usedesk+json").is_json
    assert media_type("application/x-www-form-urlencoded; charset=utf-8").is_form
    assert not media_type("text/plain").is_json
    assert not media_type("text/plain").is_form


def test_a_header_with_too_many_parameters_is_refused_before_parsing() -> None:
    header = "application/json" + ";a=b" * (MAX_HEADER_PARAMS + 1)
    with pytest.raises(DecodeError, match="Content-Type has more than 32 parameters"):
        media_type(header)
