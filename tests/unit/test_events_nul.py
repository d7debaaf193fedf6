"""`without_nul`: a NUL in text becomes U+FFFD; the text `\\u0000` (six characters) stays."""

from __future__ import annotations

import json

import pytest

from tests.helpers.usedesk import event, fixture


@pytest.mark.parametrize(
    ("message", "stored"),
    [
        ("a\x00b", "a\ufffdb"),
        ("\\u0000", "\\u0000"),  # a backslash and "u0000": no NUL at all
        ("\\\x00", "\\\ufffd"),
        ("\\\\u0000 and \x00", "\\\\u0000 and \ufffd"),
    ],
)
def test_only_a_real_nul_is_replaced(message: str, stored: str) -> None:
    payload = fixture("comment_created.json")
    payload["comment"]["message"] = message
    assert "\\u0000" in json.dumps(payload)  # the body spells it as an escape either way
    assert event(payload).message == stored
