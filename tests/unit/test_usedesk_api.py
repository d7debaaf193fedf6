"""The UseDesk API client and the API-to-webhook rewriting, without a server."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest

from services.reconcile.command import date, duration
from services.reconcile.listing import list_window
from shared.settings import load_settings
from shared.usedesk.api import (
    ApiFailed,
    ApiRefused,
    Backoff,
    Gone,
    Pacer,
    Response,
    UseDeskApi,
)
from shared.usedesk.history import ticket_history, utc_date

TOKEN = "secret-token-abcdef"


class Scripted:
    """A transport that answers from a list, and remembers what it was sent."""

    def __init__(self, *answers: Response | Exception) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def post(self, url: str, payload: dict[str, Any]) -> Response:
        self.sent.append((url, payload))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def ok(body: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(body).encode())


async def no_sleep(_: float) -> None:
    return None


def client(transport: Scripted) -> UseDeskApi:
    return UseDeskApi(
        "https://api.example/uapi/",
        TOKEN,
        transport,
        rate=1000,
        backoff=Backoff(0.01, 0.02, 4),
        sleep=no_sleep,
    )


async def test_the_token_goes_in_the_body_and_never_in_an_error() -> None:
    transport = Scripted(ok({"error": f"bad token {TOKEN}", "code": "112"}))
    with pytest.raises(ApiRefused) as refused:
        await client(transport).list_tickets({"offset": 0})
    url, payload = transport.sent[0]
    assert url == "https://api.example/uapi/tickets"
    assert payload["api_token"] == TOKEN
    assert TOKEN not in str(refused.value)
    assert "code 112" in str(refused.value)
    assert TOKEN not in repr(client(transport))


@pytest.mark.parametrize(
    "answer",
    [
        ok({"error": "limit", "code": 121}),
        ok({"message": "Too Many Requests"}, 429),
        ok({"error": "oops", "code": 111}),
        Response(502, b"<html>bad gateway</html>"),
        OSError("connection reset"),
    ],
)
async def test_limits_server_errors_and_network_failures_are_retried(
    answer: Response | Exception,
) -> None:
    transport = Scripted(answer, ok([{"id": "1"}]))
    api = client(transport)
    assert await api.list_tickets({}) == [{"id": "1"}]
    assert (api.calls, api.retries) == (2, 1)


async def test_retries_run_out_into_one_clear_error() -> None:
    api = client(Scripted(*[ok({"code": 121, "error": "limit"})] * 4))
    with pytest.raises(ApiFailed, match="still failing after 4 attempts"):
        await api.ticket(5)


async def test_code_113_is_an_answer_and_other_codes_are_errors() -> None:
    api = client(Scripted(ok({"error": "no ticket", "code": 113}, 404)))
    assert await api.ticket(5) == Gone(5, "code 113: 'no ticket'")
    api = client(Scripted(ok({"error": "bad tag", "code": 116})))
    with pytest.raises(ApiFailed, match="code 116"):
        await api.list_tickets({})
    api = client(Scripted(ok({"message": "Forbidden"}, 403)))
    with pytest.raises(ApiRefused, match="HTTP 403"):
        await api.ticket(5)


def test_backoff_grows_with_jitter_up_to_its_cap_and_honours_retry_after() -> None:
    backoff = Backoff(base=5, cap=300, attempts=8)
    for attempt, ceiling in [(0, 5), (1, 10), (3, 40), (7, 300)]:
        delays = {backoff.delay(attempt, None) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1
    assert backoff.delay(0, 60.0) == 60.0


async def test_the_pacer_spaces_request_starts() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        await pacer.wait()
    assert slept == [0.25] * 4


class Pages:
    """`list_tickets` over `count` tickets, `offset` read as `semantics` says."""

    def __init__(self, count: int, semantics: str) -> None:
        self.ids = list(range(1, count + 1))
        self.semantics = semantics
        self.offsets: list[int] = []

    async def list_tickets(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        offset = filters["offset"]
        self.offsets.append(offset)
        start = {"record": offset, "page": offset * 100, "ignored": 0}[self.semantics]
        return [{"id": str(i)} for i in self.ids[start : start + 100]]


@pytest.mark.parametrize(
    ("count", "semantics", "detected", "offsets"),
    [
        (250, "record", "record offset", [0, 1, 101, 201]),
        (250, "page", "page index", [0, 1, 2]),
        (200, "page", "page index", [0, 1, 2]),
        (100, "page", "page index", [0, 1]),
        (100, "record", "record offset", [0, 1]),
        (40, "page", "single page", [0]),
    ],
)
async def test_offset_semantics_are_detected_and_every_ticket_listed(
    count: int, semantics: str, detected: str, offsets: list[int]
) -> None:
    pages = Pages(count, semantics)
    listing = await list_window(pages, {})  # type: ignore[arg-type]
    assert (listing.semantics, listing.complete) == (detected, True)
    assert sorted(listing.tickets) == list(range(1, count + 1))
    assert pages.offsets == offsets


async def test_a_server_that_ignores_offset_leaves_the_listing_incomplete() -> None:
    listing = await list_window(Pages(150, "ignored"), {})  # type: ignore[arg-type]
    assert (listing.semantics, listing.complete) == ("ignored", False)


async def test_a_repeating_page_ends_the_listing() -> None:
    pages = Pages(300, "page")
    real = pages.list_tickets

    async def clamped(filters: dict[str, Any]) -> list[dict[str, Any]]:
        return await real({**filters, "offset": min(filters["offset"], 1)})

    pages.list_tickets = clamped  # type: ignore[method-assign]
    listing = await list_window(pages, {})  # type: ignore[arg-type]
    assert len(listing.tickets) == 200
    assert listing.pages == 3


def test_api_dates_become_explicit_utc() -> None:
    assert utc_date("2017-03-01 14:30:49") == "2017-03-01T14:30:49+00:00"
    assert utc_date("2017-03-01 14:30") == "2017-03-01T14:30:00+00:00"
    assert utc_date("0000-00-00 00:00:00") is None
    assert utc_date("2017-03-01T14:30:49+03:00") == "2017-03-01T14:30:49+03:00"


def test_the_documented_ticket_becomes_webhooks_with_the_initial_state() -> None:
    # api.md §2.3's quoted example (strings everywhere), comments inside `ticket` as in C1.
    answer = {
        "ticket": {
            "id": "2265179",
            "status_id": "2",
            "subject": "additional fields",
            "client_id": "261702",
            "assignee_id": "2",
            "group": "0",
            "last_updated_at": "2017-03-01 15:00:00",
            "published_at": "2017-03-01 14:30:49",
            "company_id": "153561",
            "comments": [
                {"id": "2658287", "from": "client", "published_at": "2017-03-01 14:30:49"}
            ],
        },
        "changes": [
            {
                "id": "213672",
                "old_status": "1",
                "new_status": "2",
                "changed_at": "2017-03-01 15:00:00",
            },
            {
                "id": "213671",
                "trigger_id": "1260",
                "data": [{"target": "assignee", "value": "2"}],
                "changed_at": "2017-03-01 14:30:49",
                "old_status": "0",
                "new_status": "0",
            },
        ],
        "tags": [{"name": "vip"}, "sms"],
    }
    history = ticket_history(answer)
    created = history.created["ticket"]
    assert (created["status_id"], created["assignee_id"], created["subject"]) == (
        1,
        None,
        "additional fields",
    )
    assert created["last_updated_at"] == created["published_at"] == "2017-03-01T14:30:49+00:00"
    assert [c["trigger"]["id"] for c in history.changes] == ["213671", "213672"]
    assert history.changes[0]["trigger"]["ticket_id"] == 2265179
    assert [c["comment"]["ticket_id"] for c in history.comments] == [2265179]
    snapshot = history.snapshot
    assert (snapshot.status_id, snapshot.assignee_id, snapshot.group_id) == (2, 2, None)
    assert (snapshot.tags, snapshot.last_change_id) == (("sms", "vip"), 213672)


def test_durations_and_dates_on_the_command_line() -> None:
    assert [duration(d) for d in ("15m", "1h", "90s", "90", "1d")] == [900, 3600, 90, 90, 86400]
    for bad in ("0", "15x", "", "-5m"):
        with pytest.raises(argparse.ArgumentTypeError):
            duration(bad)
    assert date("2024-03-01").isoformat() == "2024-03-01T00:00:00+00:00"
    assert date("2024-03-01T12:00+03:00").isoformat() == "2024-03-01T09:00:00+00:00"
    with pytest.raises(argparse.ArgumentTypeError):
        date("yesterday")


def test_the_api_token_is_a_masked_setting() -> None:
    settings = load_settings({"USEDESK_API_TOKEN": TOKEN}, dotenv=None)
    assert settings.usedesk_api_token == TOKEN
    assert TOKEN not in repr(settings)
    assert (settings.usedesk_api_url, settings.reconcile_rate) == ("https://api.usedesk.ru", 1.0)
