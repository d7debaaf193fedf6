"""The ingress's cheap per-webhook bookkeeping: the log line (every webhook, with its delivery
id, one write per loop iteration) and the metrics kept as numbers until a scrape."""

from __future__ import annotations

import asyncio
import io
import json

import structlog
from prometheus_client import CollectorRegistry, Histogram

from services.ingress.accesslog import WebhookLog
from services.ingress.metrics import PUBLISH_BUCKETS, IngressMetrics, _Tally
from shared.logging import configure_logging


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_every_webhook_gets_its_line_and_one_iteration_is_one_write() -> None:
    out = CountingStream()
    webhook_log = WebhookLog("ingress", "info", "json", stream=out)
    webhook_log.line("webhook_accepted", "d-1", "ping", 200, 1.5)
    webhook_log.line("webhook_refused", "d-2", "none", 401, 0.25, error="unauthorized")
    assert out.getvalue() == ""  # written at the end of the iteration
    await asyncio.sleep(0)
    webhook_log.line("webhook_spooled", "d-3", "ticket_created", 200, 9.0, spooled_because="x")
    webhook_log.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert out.writes == 2
    assert [line["delivery_id"] for line in lines] == ["d-1", "d-2", "d-3"]
    first = lines[0]
    assert first["event"] == "webhook_accepted"
    assert first["level"] == "info"
    assert first["service"] == "ingress"
    assert first["kind"] == "ping"
    assert first["status"] == 200
    assert first["duration_ms"] == 1.5
    assert first["timestamp"].endswith("Z")
    assert lines[1]["error"] == "unauthorized"
    assert lines[2]["spooled_because"] == "x"


async def test_above_info_no_line_and_the_console_format_goes_through_structlog() -> None:
    out = CountingStream()
    WebhookLog("ingress", "warning", "json", stream=out).line("webhook_accepted", "d", "p", 200, 1)
    await asyncio.sleep(0)
    assert out.getvalue() == ""
    console = io.StringIO()
    configure_logging("ingress", "info", "json", stream=console)
    try:
        WebhookLog("ingress", "info", "console").line("webhook_accepted", "d-9", "ping", 200, 1)
    finally:
        structlog.reset_defaults()
    [line] = [json.loads(text) for text in console.getvalue().splitlines()]
    assert line["event"] == "webhook_accepted"
    assert line["kind"] == "ping"


def test_a_tally_adds_up_to_what_observe_would_have() -> None:
    amounts = [0.0, 0.001, 0.0011, 0.003, 0.0025, 0.2, 9.9, 10.0, 10.5, 123.0, 0.05]
    direct = Histogram("direct", "d", buckets=PUBLISH_BUCKETS, registry=CollectorRegistry())
    tallied = Histogram("tallied", "t", buckets=PUBLISH_BUCKETS, registry=CollectorRegistry())
    tally = _Tally(tallied)
    for amount in amounts:
        direct.observe(amount)
        tally.observe(amount)
    tally.flush()
    tally.flush()  # nothing twice

    def samples(histogram: Histogram) -> list[tuple[str, dict[str, str], float]]:
        [metric] = histogram.collect()
        named = [(s.name.split("_", 1)[1], s.labels, s.value) for s in metric.samples]
        return [sample for sample in named if sample[0] != "created"]

    assert samples(tallied) == samples(direct)


def test_answered_requests_are_counted_by_the_next_scrape() -> None:
    metrics = IngressMetrics(lambda: True, lambda: 0)
    for _ in range(3):
        metrics.count("ping", 200)
    metrics.count("none", 401)
    metrics.observe_publish(0.002)
    text = metrics.exposition().decode()
    assert 'deskledger_ingress_requests_total{kind="ping",status="200"} 3.0' in text
    assert 'deskledger_ingress_requests_total{kind="none",status="401"} 1.0' in text
    assert 'deskledger_ingress_publish_seconds_bucket{le="0.0025"} 1.0' in text
    metrics.count("ping", 200)
    assert 'kind="ping",status="200"} 4.0' in metrics.exposition().decode()


async def test_a_sample_keeps_one_accepted_line_in_n_and_every_other_line() -> None:
    out = io.StringIO()
    webhook_log = WebhookLog("ingress", "info", "json", sample=3, stream=out)
    for n in range(7):
        webhook_log.line("webhook_accepted", f"a-{n}", "ping", 200, 1.0)
        webhook_log.line("webhook_refused", f"r-{n}", "none", 401, 1.0, error="unauthorized")
    webhook_log.line("webhook_spooled", "s", "ping", 200, 1.0, spooled_because="down")
    webhook_log.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    accepted = [line for line in lines if line["event"] == "webhook_accepted"]
    assert [line["delivery_id"] for line in accepted] == ["a-2", "a-5"]
    assert all(line["sample"] == 3 for line in accepted)
    assert len([line for line in lines if line["event"] == "webhook_refused"]) == 7
    assert "sample" not in lines[-1]
    assert lines[-1]["event"] == "webhook_spooled"
