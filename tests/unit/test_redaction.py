"""Redaction without a broker: secrets never survive, whatever the body does to hide them (I7)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingress.redaction import REDACTED, Redacted, redact, redacted_payload
from shared.usedesk import parse_body
from tests.helpers.php_forms import form_pairs

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
SECRET = "s3cr3t-value-0123"
KEY = "block-key-9876"


def redacted(body: bytes, content_type: str = JSON) -> tuple[bytes, str]:
    # Decoded as a last-wins parser would: `parse_body` refuses duplicate keys at the edge,
    # and redaction must hold on its own all the same.
    payload = msgspec.json.decode(body) if content_type == JSON else parse_body(body, content_type)
    result = redact(body, content_type, payload)
    return result.body, result.content_type


def test_payload_copy_replaces_every_secret_and_leaves_the_original() -> None:
    payload: dict[str, Any] = {
        "secret": SECRET,
        "ticket": {"id": 1, "custom_blocks": [{"secret_key": KEY}, {"name": "x"}]},
        "custom_blocks": {"3": {"secret_key": KEY, "url": "u"}},
        "trigger": {"custom_blocks": [{"secret_key": KEY}]},
    }
    before = json.dumps(payload)
    out, count = redacted_payload(payload)
    assert count == 4
    assert json.dumps(payload) == before
    assert out == {
        "secret": REDACTED,
        "ticket": {"id": 1, "custom_blocks": [{"secret_key": REDACTED}, {"name": "x"}]},
        "custom_blocks": {"3": {"secret_key": REDACTED, "url": "u"}},
        "trigger": {"custom_blocks": [{"secret_key": REDACTED}]},
    }


def test_plain_json_keeps_every_other_byte() -> None:
    body = b'{"secret": "%s",\n "ticket": {"custom_blocks": [{"secret_key" : "%s"}]}}' % (
        SECRET.encode(),
        KEY.encode(),
    )
    assert redacted(body) == (
        b'{"secret": "[redacted]",\n "ticket": {"custom_blocks": [{"secret_key" : "[redacted]"}]}}',
        JSON,
    )


def test_escaped_secret_values_are_overwritten_in_place() -> None:
    body = b'{"secret":"a\\"b\\\\c\\u00e9\\ud83d\\ude00","x":"\\u0436"}'
    assert redacted(body) == (b'{"secret":"[redacted]","x":"\\u0436"}', JSON)


@pytest.mark.parametrize(
    "body",
    [
        # A duplicate key: the parsed payload sees only the last one.
        b'{"secret":"first-hidden","secret":"%s"}' % SECRET.encode(),
        b'{"secret":{"v":"hidden"},"secret":"%s"}' % SECRET.encode(),
        b'{"secret":"%s","custom_blocks":[{"secret_key":["hidden"],"secret_key":"%s"}]}'
        % (SECRET.encode(), KEY.encode()),
        b'{"custom_blocks":[{"secret_key":"hidden"}],"custom_blocks":[],"secret":"%s"}'
        % SECRET.encode(),
        b'{"ticket":{"custom_blocks":[{"secret_key":"hidden","secret_key":"%s"}]},"secret":"%s"}'
        % (KEY.encode(), SECRET.encode()),
        # A key spelled with escapes.
        b'{"secr\\u0065t":"hidden","secret":"%s"}' % SECRET.encode(),
        b'{"custom_blocks":[{"secret_k\\u0065y":"hidden"}],"secret":"%s"}' % SECRET.encode(),
        # The secret's value also appears elsewhere, as a value or as a key.
        b'{"secret":"%s","note":"%s","%s":1}' % ((SECRET.encode(),) * 3),
        b'{"secret":"%s","note":"\\"%s"}' % ((SECRET.encode(),) * 2),
        # A secret_key that is not a string.
        b'{"secret":"%s","custom_blocks":[{"secret_key":{"v":"hidden"}}]}' % SECRET.encode(),
    ],
)
def test_bodies_that_defeat_in_place_redaction_are_reencoded(body: bytes) -> None:
    out, content_type = redacted(body)
    assert content_type == JSON
    assert b"hidden" not in out
    expected, _ = redacted_payload(msgspec.json.decode(body))  # the last key wins
    assert msgspec.json.decode(out) == expected


def test_urlencoded_pairs_are_overwritten_in_place_including_duplicates_and_deeper_names() -> None:
    body = (
        b"secret%5Bx%5D=hidden-1&secret=hidden-2&a=1&secret=" + SECRET.encode() + b"&"
        b"ticket%5Bcustom_blocks%5D%5B%5D%5Bsecret_key%5D=hidden-3&"
        b"custom_blocks[0][secret_key][deeper]=hidden-4&custom_blocks[0][secret_key]="
        + KEY.encode()
    )
    out, content_type = redacted(body, FORM)
    assert content_type == FORM
    assert b"hidden" not in out
    assert KEY.encode() not in out
    assert SECRET.encode() not in out
    assert out.startswith(b"secret%5Bx%5D=%5Bredacted%5D&secret=%5Bredacted%5D&a=1&")


def test_every_repeat_of_a_secret_form_field_is_overwritten_at_any_depth() -> None:
    body = (
        b"secret=hidden-1&ticket[custom_blocks][0][secret_key]=hidden-2"
        b"&ticket[custom_blocks][0][secret_key]=" + KEY.encode() + b"&a=1"
        b"&ticket%5Bclient%5D%5Bcustom_blocks%5D%5B0%5D%5Bsecret_key%5D=hidden-3"
        b"&client[custom_blocks][][secret_key]=hidden-4"
        b"&secret_keys=kept&secrets[x]=kept&secret=" + SECRET.encode()
    )
    out, content_type = redacted(body, FORM)
    assert content_type == FORM
    assert out == (
        b"secret=%5Bredacted%5D&ticket[custom_blocks][0][secret_key]=%5Bredacted%5D"
        b"&ticket[custom_blocks][0][secret_key]=%5Bredacted%5D&a=1"
        b"&ticket%5Bclient%5D%5Bcustom_blocks%5D%5B0%5D%5Bsecret_key%5D=%5Bredacted%5D"
        b"&client[custom_blocks][][secret_key]=%5Bredacted%5D"
        b"&secret_keys=kept&secrets[x]=kept&secret=%5Bredacted%5D"
    )


def test_a_secret_form_field_with_fields_under_it_is_redacted_whole_in_json() -> None:
    out, content_type = redacted(b"x[secret][y]=hidden&secret=" + SECRET.encode(), FORM)
    assert (msgspec.json.decode(out), content_type) == (
        {"x": {"secret": REDACTED}, "secret": REDACTED},
        JSON,
    )


def test_a_windows_1251_body_is_redacted_in_place_and_keeps_its_charset() -> None:
    client = {"custom_blocks": [{"secret_key": KEY}]}
    payload = {"secret": SECRET, "ticket": {"subject": "Код №5", "client": client}}
    body = json.dumps(payload, ensure_ascii=False).encode("cp1251")
    content_type = "application/json; charset=windows-1251"
    result = redact(body, content_type, parse_body(body, content_type))
    assert result == Redacted(
        body.replace(SECRET.encode(), b"[redacted]").replace(KEY.encode(), b"[redacted]"),
        content_type,
    )

    form = b"secret=" + SECRET.encode() + b"&ticket[subject]=%CA%EE%E4+%B95&ticket[x]=\xca"
    content_type = "application/x-www-form-urlencoded; charset=windows-1251"
    result = redact(form, content_type, parse_body(form, content_type))
    assert result == Redacted(form.replace(SECRET.encode(), b"%5Bredacted%5D"), content_type)
    assert parse_body(result.body, content_type)["ticket"] == {"subject": "Код №5", "x": "К"}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        # UTF-16 and UTF-7 bytes cannot be searched for `secret` as ASCII: re-encoded.
        (json.dumps({"secret": SECRET, "s": "Код"}).encode("utf-16"), "utf-16"),
        ("secret=hidden&+AHM-ecret=" + SECRET, "utf-7"),
        ("+AHM-ecret=hidden&secret=" + SECRET, "utf-7"),
    ],
)
def test_a_body_in_a_charset_bytes_cannot_be_searched_in_is_reencoded_as_utf8_json(
    body: bytes | str, content_type: str
) -> None:
    if isinstance(body, str):
        body, content_type = body.encode("ascii"), f"{FORM}; charset={content_type}"
    else:
        content_type = f"{JSON}; charset={content_type}"
    result = redact(body, content_type, parse_body(body, content_type))
    assert result.content_type == JSON
    assert b"hidden" not in result.body
    assert SECRET.encode() not in result.body
    assert msgspec.json.decode(result.body)["secret"] == REDACTED


def test_multipart_is_reencoded_as_json() -> None:
    content_type = "multipart/form-data; boundary=XyZ"
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="secret"\r\n\r\n'
        + SECRET.encode()
        + b'\r\n--XyZ\r\nContent-Disposition: form-data; name="ping"\r\n\r\n1\r\n--XyZ--\r\n'
    )
    result = redact(body, content_type, parse_body(body, content_type))
    assert (result.body, result.content_type) == (b'{"secret":"[redacted]","ping":"1"}', JSON)


def test_secrets_are_redacted_at_any_depth_and_nothing_else_is_copied() -> None:
    untouched = {"name": "CRM", "url": "u"}
    payload: dict[str, Any] = {
        "secret": SECRET,
        "ticket": {"client": {"custom_blocks": [{"secret_key": KEY}, untouched]}},
        "client": {"id": 5, "custom_blocks": {"2": {"secret_key": {"v": KEY}}}},
        "custom_blocks": [{"block": {"secret_key": KEY}}],
        "comment": {"custom_fields": [{"secret": SECRET}]},
        "other": {"list": [[{"secret_key": KEY}]]},
        "kept": untouched,
    }
    before = json.dumps(payload)
    out, count = redacted_payload(payload)
    assert count == 6
    assert json.dumps(payload) == before
    assert SECRET not in json.dumps(out)
    assert KEY not in json.dumps(out)
    assert out["ticket"]["client"]["custom_blocks"] == [{"secret_key": REDACTED}, untouched]
    assert out["client"] == {"id": 5, "custom_blocks": {"2": {"secret_key": REDACTED}}}
    assert out["ticket"]["client"]["custom_blocks"][1] is untouched
    assert out["kept"] is untouched


def test_deep_secret_keys_in_json_are_overwritten_in_place() -> None:
    body = (
        b'{"secret":"%s","ticket":{"id":1,"client":{"custom_blocks":[{"secret_key":"%s",'
        b'"name":"\\u0416"}]}},"client":{"custom_blocks":[{"secret_key" : "%s"}]}}'
    ) % (SECRET.encode(), KEY.encode(), KEY.encode())
    assert redacted(body) == (
        b'{"secret":"[redacted]","ticket":{"id":1,"client":{"custom_blocks":[{"secret_key":'
        b'"[redacted]","name":"\\u0416"}]}},"client":{"custom_blocks":[{"secret_key" : '
        b'"[redacted]"}]}}',
        JSON,
    )


_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@given(
    extra=st.dictionaries(_text, _values, max_size=4),
    secret=_text,
    key=_text,
    ensure_ascii=st.booleans(),
)
def test_no_secret_survives_any_json_body(
    extra: dict[str, Any], secret: str, key: str, ensure_ascii: bool
) -> None:
    payload = {
        **extra,
        "secret": "S<" + secret,
        "ticket": {"custom_blocks": [{"secret_key": "K<" + key}]},
    }
    body = json.dumps(payload, ensure_ascii=ensure_ascii).encode()
    out, content_type = redacted(body)
    result = parse_body(out, content_type)
    assert result["secret"] == REDACTED
    assert result["ticket"]["custom_blocks"][0]["secret_key"] == REDACTED
    assert result == redacted_payload(parse_body(body, JSON))[0]


_keys = st.sampled_from(["secret", "secret_key", "custom_blocks", "client", "a", "0", "1"])
_plain = st.text(st.sampled_from("abcxyzЖ -=&%[]"), max_size=6)
_tree = st.recursive(
    _plain,
    lambda inner: (
        st.lists(inner, min_size=1, max_size=3)
        | st.dictionaries(_keys, inner, min_size=1, max_size=3)
    ),
    max_leaves=12,
)


def _planted(node: Any, under_secret: bool = False, serial: list[int] | None = None) -> Any:
    """`node` with every leaf under a `secret`/`secret_key` key replaced by a marked value."""
    serial = [0] if serial is None else serial
    if isinstance(node, dict):
        return {
            k: _planted(v, under_secret or k in {"secret", "secret_key"}, serial)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_planted(v, under_secret, serial) for v in node]
    if not under_secret:
        return node
    serial[0] += 1
    return f"PLANTED{serial[0]}"


@given(tree=st.dictionaries(_keys, _tree, max_size=4), repeats=st.lists(st.integers(0, 50)))
def test_no_planted_secret_survives_at_any_depth_in_json_or_forms(
    tree: dict[str, Any], repeats: list[int]
) -> None:
    payload = _planted({**tree, "secret": "x"})
    text = json.dumps(payload, ensure_ascii=False)
    for content_type, body in [
        (JSON, text.encode()),
        (f"{JSON}; charset=windows-1251", text.encode("cp1251")),
    ]:
        out, _ = redacted(body, content_type)
        assert b"PLANTED" not in out
    # A form may also repeat a field, and the parsed payload shows the last value only.
    pairs = form_pairs(payload)
    secret_pairs = [(k, v) for k, v in pairs if v.startswith("PLANTED")]
    for n, at in enumerate(repeats):
        if secret_pairs:
            name, _ = secret_pairs[at % len(secret_pairs)]
            pairs.insert(at % (len(pairs) + 1), (name, f"PLANTED-hidden{n}"))
    for charset in ["utf-8", "cp1251"]:
        form = urlencode(pairs, encoding=charset).encode("ascii")
        out, _ = redacted(form, f"{FORM}; charset={charset}")
        assert b"PLANTED" not in out


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # UseDesk's JSON is redacted on its bytes: every key of either name, at any depth.
        (
            b'{"secret":"a","x":[{"secret_key":"b"},{"y":{"secret":"c","secret":"d"}}]}',
            b'{"secret":"[redacted]","x":[{"secret_key":"[redacted]"},'
            b'{"y":{"secret":"[redacted]","secret":"[redacted]"}}]}',
        ),
        # A key that merely ends in an escaped quote and `secret` is redacted too (harmless).
        (
            b'{"a\\"secret":"v","secret":"s"}',
            b'{"a\\"secret":"[redacted]","secret":"[redacted]"}',
        ),
    ],
)
def test_plain_json_is_redacted_on_its_bytes(body: bytes, expected: bytes) -> None:
    assert redact(body, JSON, msgspec.json.decode(body)) == Redacted(expected, JSON)


@pytest.mark.parametrize(
    "body",
    [
        b'{"note":"secret","secret":"s3cr3t-hidden"}',
        b'{"secret":"s3cr3t-hidden","custom_blocks":[{"secret_key":7}]}',
        b'{"secr\\u0065t":"s3cr3t-hidden"}',
    ],
)
def test_plain_json_the_bytes_cannot_prove_is_checked(body: bytes) -> None:
    out, _ = redacted(body)
    assert b"s3cr3t-hidden" not in out
    assert msgspec.json.decode(out) == redacted_payload(msgspec.json.decode(body))[0]
