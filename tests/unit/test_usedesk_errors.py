"""What the decoder refuses, and how: one `DecodeError` naming kind, path and reason (I8)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.errors import DecodeError
from shared.usedesk import decode_webhook, parse_body
from tests.helpers.php_forms import URLENCODED
from tests.helpers.usedesk import JSON, MOSCOW, RECEIVED


def failure(body: bytes, content_type: str = JSON) -> str:
    with pytest.raises(DecodeError) as caught:
        decode_webhook(body, content_type, received_at=RECEIVED, tz=MOSCOW)
    error = caught.value
    assert str(error) == f"{error.kind}: {error.path}: {error.reason}".replace(": : ", ": ")
    return str(error)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"trigger":{"id":1,"ticket_id":"abc"}}',
            'ticket_changed: trigger.ticket_id: expected an integer, got "abc"',
        ),
        (
            b'{"trigger":{"id":1,"ticket_id":true}}',
            "ticket_changed: trigger.ticket_id: expected an integer, got true",
        ),
        (
            b'{"ticket":{"id":1,"custom_fields":[{"id":7},{"id":"x"}]}}',
            'ticket_created: ticket.custom_fields[1].id: expected an integer, got "x"',
        ),
        (
            b'{"comment":{"id":1,"ticket_id":2,"is_first":"yes"}}',
            'comment_created: comment.is_first: expected 0 or 1, got "yes"',
        ),
        (
            b'{"csi":{"id":1,"ticket_id":2,"rating":-1}}',
            "rating: csi.rating: expected an integer from 0 to 9223372036854775807, got -1",
        ),
        (
            b'{"ticket":{"id":123456789012345678901234567890}}',
            "ticket_created: ticket.id: expected an integer from 0 to 9223372036854775807,"
            " got a huge integer",
        ),
        (b'{"ticket":{"id":1e999}}', "ticket_created: ticket.id: number out of range"),
        (b'{"ticket":{"id":1.5}}', "ticket_created: ticket.id: expected an integer, got 1.5"),
        (b'{"ticket":null}', "ticket_created: ticket: expected an object, got null"),
        (b'{"ticket":[1]}', "ticket_created: ticket: expected an object, got an array"),
        (
            b'{"trigger":{"id":1,"ticket_id":2,"data":5}}',
            "ticket_changed: trigger.data: expected an object or an array, got 5",
        ),
        (
            b'{"comment":{"id":1,"ticket_id":2,"is_first":"maybe"}}',
            'comment_created: comment.is_first: expected 0 or 1, got "maybe"',
        ),
        (
            b'{"csi":{"id":1,"ticket_id":2,"updated_at":"yesterday"}}',
            'rating: csi.updated_at: expected a date like "2024-03-05 11:52:40", got "yesterday"',
        ),
        (b"[1, 2]", "unknown: expected an object, got an array"),
        (b'"ticket"', 'unknown: expected an object, got "ticket"'),
        (b'{"ticket":', "unknown: not valid JSON: Input data was truncated"),
        (b'{"ticket":{"subject":"\xff"}}', "unknown: not valid JSON: not valid UTF-8"),
        (b"", "unknown: not valid JSON: Input data was truncated"),
    ],
)
def test_errors_name_the_kind_the_path_and_the_reason(body: bytes, message: str) -> None:
    assert failure(body) == message


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b'{"ticket":{"subject":"x"}}', "ticket_created: ticket.id: required, got nothing"),
        (b'{"ticket":{"id":""}}', 'ticket_created: ticket.id: required, got ""'),
        (b'{"trigger":{"ticket_id":2}}', "ticket_changed: trigger.id: required, got nothing"),
        (b'{"trigger":{"id":1}}', "ticket_changed: trigger.ticket_id: required, got nothing"),
        (b'{"comment":{"id":1}}', "comment_created: comment.ticket_id: required, got nothing"),
        (b'{"comment":{"ticket_id":1}}', "comment_created: comment.id: required, got nothing"),
        (b'{"csi":{"id":1,"ticket_id":null}}', "rating: csi.ticket_id: required, got nothing"),
        (b'{"csi":{"ticket_id":1,"id":0}}', "rating: csi.id: required, got 0"),
    ],
)
def test_a_kind_without_its_natural_id_is_refused(payload: bytes, message: str) -> None:
    assert failure(payload) == message


def test_form_errors_name_the_form_path_too() -> None:
    assert failure(b"trigger[id]=1&trigger[ticket_id]=abc", URLENCODED) == (
        'ticket_changed: trigger.ticket_id: expected an integer, got "abc"'
    )
    assert failure(b"ticket[id]=1&ticket[published_at]=soon", URLENCODED).startswith(
        "ticket_created: ticket.published_at: expected a date"
    )
    assert failure(b"ticket[x=1", URLENCODED) == "unknown: ticket[x: form key has an unclosed '['"


@pytest.mark.parametrize("content_type", ["text/plain", "", "application/xml"])
def test_other_content_types_are_refused(content_type: str) -> None:
    assert failure(b"{}", content_type).startswith("unknown: unsupported content type")
    with pytest.raises(DecodeError):
        parse_body(b"{}", content_type)


def test_parse_body_reads_json_objects_and_forms() -> None:
    assert parse_body(b'{"a":1,"c":{"b":[2]}}', JSON) == {"a": 1, "c": {"b": [2]}}
    with pytest.raises(DecodeError, match=r'^unknown: the key "a" appears twice in one object$'):
        parse_body(b'{"a":1,"a":{"b":[2]}}', JSON)
    assert parse_body(b"a[b][]=1", URLENCODED) == {"a": {"b": ["1"]}}
    with pytest.raises(DecodeError, match=r"^unknown: expected a JSON object, got an array$"):
        parse_body(b"[]", JSON)


def hostile_bodies() -> Iterator[bytes]:
    yield b"[" * 200_000
    yield b'{"a":' * 50_000
    yield b'{"ticket":{"id":1,"x":' + b"[" * 100_000
    yield b'{"trigger":{"id":1,"ticket_id":2,"data":[{"value":' + b'{"a":' * 50_000
    yield b'{"ping":' + b"[" * 3000 + b"]" * 3000 + b"}"
    # Custom fields decode into `CustomField`, which ignores unknown keys: msgspec skips them.
    yield b'{"comment":{"id":1,"ticket_id":2},"custom_fields":[{"id":1,"x":' + b"[" * 100_000
    yield (
        b'{"csi":{"id":1,"ticket_id":2},"custom_fields":[{"x":' + b"[" * 3000 + b"]" * 3000 + b"}]}"
    )
    yield b'{"a":"' + b'\\"' * 300_000  # an unterminated string of escaped quotes
    yield b'{"ticket":{"id":1,"subject":"\xc3\x28"}}'
    yield b'{"ticket":{"id":' + b"9" * 100_000 + b"}}"
    yield b'{"csi":{"id":1,"ticket_id":2,"comment":' + b"1" * 5000 + b"}}"
    yield b'{"ticket":{"id":1},"ticket":{"id":"x"}}'
    yield b"\x00\xff\xfe" * 1000


@pytest.mark.parametrize("body", list(hostile_bodies()), ids=lambda b: repr(b[:24]))
def test_hostile_json_costs_a_decode_error_and_nothing_more(body: bytes) -> None:
    for attempt in calls(body):
        try:
            kind = type(attempt()).__name__
        except DecodeError as error:
            kind = error.kind
        assert kind in ("unknown", "ticket_created", "rating", "tuple", "dict")


_SMALL_STACK = """
import threading
from tests.unit.test_usedesk_errors import calls, hostile_bodies

def run() -> None:
    for body in hostile_bodies():
        for call in calls(body):
            try:
                call()
            except Exception as error:
                assert type(error).__name__ == "DecodeError", error
    print("survived")

threading.stack_size(256 * 1024)
thread = threading.Thread(target=run)
thread.start()
thread.join()
"""


def test_deep_json_is_refused_before_msgspec_recurses_even_on_a_small_thread_stack() -> None:
    # msgspec needs more than 256 KiB of C stack to reach its recursion guard; on a smaller
    # stack only the depth check stands between a hostile body and a crashed process, so
    # this runs in a child process that would die with SIGSEGV.
    child = subprocess.run(
        [sys.executable, "-c", _SMALL_STACK],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (child.returncode, child.stdout.strip()) == (0, "survived"), child.stderr[-2000:]


def calls(body: bytes) -> list[Callable[[], object]]:
    return [
        lambda: decode_webhook(body, JSON, received_at=RECEIVED, tz=MOSCOW),
        lambda: parse_body(body, JSON),
    ]
