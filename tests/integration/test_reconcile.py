"""`deskledger reconcile` against the UseDesk stand-in (tests/helpers/usedesk_api.py).

Each test builds a history in the stand-in, delivers its webhooks into the store through the
worker's own recording path, minus some that are "lost", reconciles, and checks: each lost fact
recovered once with `source = 'api'`, nothing else appended, a second pass appending nothing,
late webhooks recorded as duplicates, every event's delivery `recorded`, replay equal to live.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from services.reconcile.passes import Options, PassReport, Reconciler
from services.reconcile.transport import AiohttpTransport
from shared.envelope import Delivery
from shared.recording import decode, record
from shared.settings import Settings
from shared.usedesk import detect_kind
from shared.usedesk.api import Backoff, UseDeskApi
from tests.helpers.checker import ORPHAN_EVENTS, dry_run_differences, replay_differences
from tests.helpers.usedesk_api import StandIn, Variant, history_start

TOKEN = "test-usedesk-api-token-5f3a"
UTC_ZONE = ZoneInfo("UTC")
FAST = Backoff(base=0.01, cap=0.05, attempts=6)


@pytest.fixture
def utc_settings(settings: Settings) -> Settings:
    # The stand-in writes UTC dates in webhooks and API alike: a correctly configured install.
    return settings.replace(source_timezone=UTC_ZONE, usedesk_api_token=TOKEN)


@dataclass
class Story:
    """The stand-in's history and the webhooks it sent, by fact key."""

    stand_in: StandIn
    webhooks: dict[tuple[str, str], dict[str, Any]]


def _key(payload: dict[str, Any]) -> tuple[str, str]:
    kind = detect_kind(payload)
    section = next(iter(payload.values()))
    return kind, str(section["id"])


def story(stand_in: StandIn, tickets: int, first_id: int = 1000) -> Story:
    """Per ticket: created, a client comment, an agent reply, solved (assignee and status)."""
    start = history_start()
    webhooks: dict[tuple[str, str], dict[str, Any]] = {}
    for n in range(tickets):
        ticket_id = first_id + n
        at = start + timedelta(minutes=n)
        sent = [
            stand_in.create(ticket_id, at),
            stand_in.comment(ticket_id, 50_000 + 2 * n, at + timedelta(seconds=5)),
            stand_in.comment(ticket_id, 50_001 + 2 * n, at + timedelta(minutes=3), "user"),
            stand_in.change(ticket_id, 70_000 + n, at + timedelta(minutes=4), 2, assignee=77),
        ]
        webhooks.update((_key(payload), payload) for payload in sent)
    return Story(stand_in, webhooks)


def webhook_delivery(payload: dict[str, Any]) -> Delivery:
    return Delivery(
        delivery_id=uuid.uuid4(),
        received_at=history_start(hours_ago=48),
        kind=detect_kind(payload),
        content_type="application/json",
        body=json.dumps(payload).encode(),
    )


async def deliver(conn: asyncpg.Connection, payloads: list[dict[str, Any]]) -> list[str]:
    """Record webhooks as the worker does; their outcomes."""
    decoded = [decode(webhook_delivery(p), UTC_ZONE, None) for p in payloads]
    result = await record(conn, decoded)
    return [result.outcomes[d.delivery.delivery_id] for d in decoded]


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    server = StandIn(TOKEN)
    await server.start()
    yield server
    await server.close()


async def reconcile(
    settings: Settings, url: str, options: Options, rate: float = 1000.0
) -> PassReport:
    async with AiohttpTransport() as transport:
        api = UseDeskApi(url, settings.usedesk_api_token, transport, rate=rate, backoff=FAST)
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await Reconciler(settings, api, conn).run(options)
        finally:
            await conn.close()


async def api_events(db: asyncpg.Connection) -> list[tuple[str, str]]:
    rows = await db.fetch("SELECT type, source_id FROM events WHERE source = 'api' ORDER BY 1, 2")
    return [(row["type"], row["source_id"]) for row in rows]


async def assert_store_sound(db: asyncpg.Connection, database_url: str) -> None:
    assert await db.fetch(ORPHAN_EVENTS) == []
    doubled = await db.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM events GROUP BY type, source_id HAVING count(*) > 1)"
        " AS d"
    )
    assert doubled == 0
    assert await replay_differences(db) == {}
    assert await dry_run_differences(database_url) == {}


SINCE = Options(since=datetime.now(UTC) - timedelta(days=3))


@pytest.mark.parametrize(
    "variant",
    [
        Variant(offset="record"),
        Variant(offset="page", comments_inside_ticket=True, string_ids=True),
    ],
    ids=["record-offset-top-comments-int-ids", "page-index-inner-comments-string-ids"],
)
async def test_a_window_of_150_tickets_recovers_each_lost_fact_once(
    variant: Variant, utc_settings: Settings, db: asyncpg.Connection, database_url: str
) -> None:
    stand_in = StandIn(TOKEN, variant)
    url = await stand_in.start()
    try:
        told = story(stand_in, 150)
        lost = {
            ("ticket_created", "1003"),
            ("ticket_created", "1120"),
            ("ticket_changed", "70010"),
            ("ticket_changed", "70149"),
            ("comment_created", "50020"),
            ("comment_created", "50101"),
        }
        delivered = [p for k, p in told.webhooks.items() if k not in lost]
        assert set(await deliver(db, delivered)) == {"recorded"}

        first = await reconcile(utc_settings, url, SINCE)
        assert first.complete
        assert first.error is None
        assert first.tickets_listed == 150
        expected = "record offset" if variant.offset == "record" else "page index"
        assert first.offset_semantics == expected
        assert dict(first.missing) == {
            "ticket_created": 2,
            "ticket_changed": 2,
            "comment_created": 2,
        }
        assert set(await api_events(db)) == lost
        assert first.corrections == 0
        events = await db.fetchval("SELECT count(*) FROM events")
        assert events == len(told.webhooks)

        second = await reconcile(utc_settings, url, SINCE)
        assert second.complete
        assert not second.missing
        assert second.corrections == 0
        assert (second.tickets_listed, second.tickets_fetched) == (150, 0)
        resumed = await reconcile(utc_settings, url, Options())
        assert resumed.complete
        assert not resumed.missing
        assert resumed.tickets_fetched == 0
        assert await db.fetchval("SELECT count(*) FROM events") == events

        # The lost webhooks arrive after all: duplicates, as any duplicate.
        late = await deliver(db, [told.webhooks[k] for k in sorted(lost)])
        assert late == ["duplicate"] * len(lost)
        await assert_store_sound(db, database_url)
    finally:
        await stand_in.close()


async def test_the_watermark_moves_only_after_a_complete_pass(
    utc_settings: Settings, db: asyncpg.Connection
) -> None:
    stand_in = StandIn(TOKEN, Variant(offset="ignored"))
    url = await stand_in.start()
    try:
        story(stand_in, 120)
        incomplete = await reconcile(utc_settings, url, SINCE)
        assert not incomplete.complete
        assert incomplete.offset_semantics == "ignored"
        assert await db.fetchval("SELECT count(*) FROM reconcile_watermark") == 0
        stand_in.variant.offset = "record"
        complete = await reconcile(utc_settings, url, SINCE)
        assert complete.complete
        assert await db.fetchval("SELECT watermark FROM reconcile_watermark") == complete.started
        outcomes = await db.fetch("SELECT outcome FROM reconcile_passes ORDER BY started_at")
        assert [row["outcome"] for row in outcomes] == ["incomplete", "complete"]
    finally:
        await stand_in.close()


@pytest.mark.parametrize("status", [200, 429])
async def test_rate_limits_are_waited_out_with_backoff_and_pacing(
    status: int, stand_in: StandIn, utc_settings: Settings, db: asyncpg.Connection
) -> None:
    stand_in.variant = Variant(rate_limit_every=3, rate_limit_status=status)
    told = story(stand_in, 6)
    report = await reconcile(utc_settings, stand_in.url, SINCE, rate=25.0)
    assert report.complete
    assert report.error is None
    assert report.api_retries >= 2
    assert len(await api_events(db)) == len(told.webhooks)
    # Paced by the client: on average no faster than the rate (single gaps jitter on arrival).
    starts = [at for at, _, _ in stand_in.requests]
    assert starts[-1] - starts[0] >= (len(starts) - 1) / 25.0 * 0.9


async def test_a_vanished_ticket_is_recorded_not_retried(
    stand_in: StandIn, utc_settings: Settings, db: asyncpg.Connection
) -> None:
    story(stand_in, 3)
    stand_in.gone.add(1001)
    first = await reconcile(utc_settings, stand_in.url, SINCE)
    assert first.complete
    assert first.tickets_gone == 1
    assert [c["ticket_id"] for c in stand_in.calls("/ticket")].count(1001) == 1
    gone = await db.fetchrow(
        "SELECT gone, gone_reason FROM reconcile_tickets WHERE ticket_id = 1001"
    )
    assert gone is not None
    assert gone["gone"]
    assert "113" in gone["gone_reason"]
    assert await db.fetchval("SELECT count(*) FROM events WHERE ticket_id = 1001") == 0
    await reconcile(utc_settings, stand_in.url, SINCE)
    assert [c["ticket_id"] for c in stand_in.calls("/ticket")].count(1001) == 1


async def test_a_state_the_history_does_not_explain_gets_one_snapshot_correction(
    stand_in: StandIn, utc_settings: Settings, db: asyncpg.Connection, database_url: str
) -> None:
    told = story(stand_in, 2)
    assert set(await deliver(db, list(told.webhooks.values()))) == {"recorded"}
    # Reopened in UseDesk by something no webhook or history entry told; tagged too.
    stand_in.silent_status(1000, 1, datetime.now(UTC).replace(microsecond=0))
    stand_in.tag(1000, "vip")
    first = await reconcile(utc_settings, stand_in.url, SINCE)
    assert first.complete
    assert not first.missing
    assert first.corrections == 1
    row = await db.fetchrow(
        "SELECT status_id, tags, reopened_count FROM tickets WHERE ticket_id = 1000"
    )
    assert row is not None
    assert (row["status_id"], json.loads(row["tags"]), row["reopened_count"]) == (1, ["vip"], 1)
    snapshots = await db.fetch(
        "SELECT source_id, source FROM events WHERE type = 'ticket_snapshot'"
    )
    assert [(r["source_id"], r["source"]) for r in snapshots] == [
        (f"1000@{stand_in.full(stand_in.tickets[1000])['ticket']['last_updated_at']}", "api")
    ]
    again = await reconcile(utc_settings, stand_in.url, SINCE)
    assert again.corrections == 0
    assert not again.missing
    assert await db.fetchval("SELECT count(*) FROM events WHERE type = 'ticket_snapshot'") == 1
    await assert_store_sound(db, database_url)


async def test_a_dry_run_appends_nothing_and_says_what_it_would(
    stand_in: StandIn, utc_settings: Settings, db: asyncpg.Connection
) -> None:
    told = story(stand_in, 4)
    await deliver(db, [p for k, p in told.webhooks.items() if k[0] != "comment_created"])
    before = await db.fetchval("SELECT count(*) FROM events")
    report = await reconcile(utc_settings, stand_in.url, Options(since=SINCE.since, dry_run=True))
    assert dict(report.missing) == {"comment_created": 8}
    assert await db.fetchval("SELECT count(*) FROM events") == before
    for table in (
        "reconcile_passes",
        "reconcile_watermark",
        "reconcile_tickets",
        "reconcile_facts",
    ):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0


async def test_named_tickets_only_and_completeness_by_type(
    stand_in: StandIn, utc_settings: Settings, db: asyncpg.Connection
) -> None:
    from shared.completeness import completeness

    told = story(stand_in, 3)
    await deliver(db, [p for k, p in told.webhooks.items() if k != ("comment_created", "50002")])
    report = await reconcile(utc_settings, stand_in.url, Options(tickets=(1001,)))
    assert report.complete
    assert report.tickets_listed == 0
    assert report.tickets_fetched == 1
    assert dict(report.missing) == {"comment_created": 1}
    assert await db.fetchval("SELECT count(*) FROM reconcile_watermark") == 0
    figure = await completeness(db)
    assert figure.facts == 4
    assert figure.missing == 1
    assert figure.line().startswith("75.0 % over the last 7 days (1 of 4 facts")


# --- the command line ---------------------------------------------------------------------------


async def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    from tests.helpers.services import deskledger

    process = await deskledger(settings, "reconcile", *args)
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_backfill_prints_a_summary_and_status_shows_completeness(
    stand_in: StandIn, utc_settings: Settings, db: asyncpg.Connection
) -> None:
    from services.status import database_figures

    told = story(stand_in, 5)
    await deliver(db, [p for k, p in told.webhooks.items() if k != ("ticket_changed", "70002")])
    settings = utc_settings.replace(usedesk_api_url=stand_in.url, reconcile_rate=50.0)
    status, out, err = await cli(settings, "--since", "2020-01-01")
    assert status == 0, err
    assert "reconcile pass complete: updated since 2020-01-01 00:00 UTC" in out
    assert "facts missing        ticket_changed 1 (appended, source api)" in out
    assert "webhook completeness 95.0 % over the last 7 days (1 of 20 facts" in out
    assert TOKEN not in out + err
    figures = await database_figures(settings)
    assert figures["webhook_completeness"]["ratio"] == 0.95


async def test_cli_stops_on_a_bad_token_with_one_clear_line_and_no_token(
    stand_in: StandIn, utc_settings: Settings, db: asyncpg.Connection
) -> None:
    story(stand_in, 2)
    wrong = "wrong-token-0123456789abcdef"
    settings = utc_settings.replace(usedesk_api_url=stand_in.url, usedesk_api_token=wrong)
    status, out, err = await cli(settings, "--since", "2020-01-01")
    assert status == 1
    (line,) = [line for line in err.splitlines() if line.startswith("deskledger reconcile:")]
    assert "UseDesk refused the API token (code 112" in line
    assert "check USEDESK_API_TOKEN" in line
    assert wrong not in out + err
    failed = await db.fetchrow("SELECT outcome, error FROM reconcile_passes")
    assert failed is not None
    assert failed["outcome"] == "failed"
    assert await db.fetchval("SELECT count(*) FROM reconcile_watermark") == 0


async def test_cli_refuses_to_start_without_a_token(utc_settings: Settings) -> None:
    status, _, err = await cli(utc_settings.replace(usedesk_api_token=""), "--dry-run")
    assert status == 2
    assert "USEDESK_API_TOKEN is empty" in err
