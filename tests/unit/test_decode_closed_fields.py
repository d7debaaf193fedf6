"""Custom fields on the hot path: the closed envelope decodes them straight into `CustomField`
and `mapping` checks them; whatever the wire types would read differently is read again by
the tolerant structs, so the event (or the error) is the one it always was."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.errors import DecodeError
from shared.events import CustomField
from tests.helpers.usedesk import decode, event, fixture

INT64_MAX = 2**63 - 1


def comment_with(fields: Any) -> dict[str, Any]:
    payload = fixture("comment_created.json")
    payload["custom_fields"] = fields
    return payload


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            [{"id": 61, "name": "Order", "value": "A-1"}],
            (CustomField(id=61, name="Order", value="A-1"),),
        ),
        ([{"id": "61", "name": "Order", "value": None}], (CustomField(id=61, name="Order"),)),
        ([{"id": INT64_MAX, "value": "v"}], (CustomField(id=INT64_MAX, value="v"),)),
        # An id of 0 or "" means none; a field with nothing in it is dropped.
        ([{"id": 0, "name": "a", "value": "b"}], (CustomField(name="a", value="b"),)),
        ([{"id": "", "name": "a"}], (CustomField(name="a"),)),
        ([{"id": None}, {}, {"id": 7}], (CustomField(id=7),)),
        # A PHP sparse array, and text sent as a number.
        ({"1": {"id": 7, "name": "n", "value": "v"}}, (CustomField(id=7, name="n", value="v"),)),
        ([{"id": 7, "name": 5, "value": True}], (CustomField(id=7, name="5", value="1"),)),
        # An undocumented key is ignored, whatever it holds.
        ([{"id": 7, "value": "v", "extra": [1, {"a": [2]}]}], (CustomField(id=7, value="v"),)),
        ([], ()),
        (None, ()),
    ],
)
def test_custom_fields_read_as_the_wire_types_read_them(fields: Any, expected: Any) -> None:
    assert event(comment_with(fields)).custom_fields == expected


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([{"id": -1}], "custom_fields[0].id: expected an integer from 0 to"),
        ([{"id": 7}, {"id": INT64_MAX + 1}], "custom_fields[1].id: expected an integer from 0 to"),
        ([{"id": "x"}], "custom_fields[0].id: expected an integer"),
    ],
)
def test_a_custom_field_id_out_of_range_is_refused_as_before(fields: Any, reason: str) -> None:
    with pytest.raises(DecodeError, match=r"^comment_created: " + reason.replace("[", r"\[")):
        event(comment_with(fields))


def test_deep_nesting_under_an_undocumented_key_is_a_decode_error() -> None:
    # The closed envelope skips it under msgspec's recursion guard; the tolerant reading then
    # refuses it by the depth check (test_usedesk_errors.py runs this on a small stack too).
    text = json.dumps(comment_with([{"id": 7, "x": 0}]))
    body = text.replace('"x": 0', '"x": ' + "[" * 5000 + "]" * 5000).encode()
    with pytest.raises(DecodeError, match="nests deeper"):
        decode(body)
