"""What a pass tells its operator: the summary on stdout, one log line, and the metrics.

Metrics (Prometheus, served with `--metrics-port` by a long-running `--every`):
`deskledger_reconcile_missing_facts_total{type}` (facts the API had and the webhooks had not
delivered), `deskledger_reconcile_corrections_total`, `deskledger_reconcile_api_calls_total`,
`deskledger_reconcile_passes_total{outcome}`, `deskledger_reconcile_last_complete_pass_timestamp`
and `deskledger_webhook_completeness_ratio` (over the last 7 days, as `deskledger status`).

They live in a registry of their own (`REGISTRY`), served only by reconcile's endpoint: every
command imports this module (the CLI builds its parser from all of them), and in the default
registry a worker's /metrics exported a completeness of 0 and a last pass at 1970, which fired
the "webhooks lost" and "reconcile stalled" alerts on deployments that never reconcile.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from services.reconcile.passes import PassReport
from shared.build import register_build_info
from shared.completeness import Completeness

log = structlog.get_logger()

REGISTRY = CollectorRegistry()
MISSING = Counter(
    "deskledger_reconcile_missing_facts_total",
    "Facts UseDesk's API had that webhooks had not delivered, by type",
    ["type"],
    registry=REGISTRY,
)
CORRECTIONS = Counter(
    "deskledger_reconcile_corrections_total", "Snapshot corrections appended", registry=REGISTRY
)
API_CALLS = Counter(
    "deskledger_reconcile_api_calls_total", "UseDesk API requests made", registry=REGISTRY
)
PASSES = Counter(
    "deskledger_reconcile_passes_total",
    "Reconcile passes, by outcome",
    ["outcome"],
    registry=REGISTRY,
)
LAST_COMPLETE = Gauge(
    "deskledger_reconcile_last_complete_pass_timestamp",
    "Unix time of the start of the last complete pass",
    registry=REGISTRY,
)
COMPLETENESS = Gauge(
    "deskledger_webhook_completeness_ratio",
    "Of the facts the API showed over the last 7 days, the share webhooks had delivered",
    registry=REGISTRY,
)


def outcome(report: PassReport) -> str:
    return "failed" if report.error else "complete" if report.complete else "incomplete"


def observe(report: PassReport, completeness: Completeness | None) -> None:
    PASSES.labels(outcome(report)).inc()
    API_CALLS.inc(report.api_calls)
    if report.dry_run:
        return
    for kind, count in report.missing.items():
        MISSING.labels(kind).inc(count)
    CORRECTIONS.inc(report.corrections)
    if outcome(report) == "complete":
        LAST_COMPLETE.set(report.started.timestamp())
    if completeness is not None and completeness.ratio is not None:
        COMPLETENESS.set(completeness.ratio)


def summary(report: PassReport, completeness: Completeness | None) -> str:
    verb = "would append" if report.dry_run else "appended"
    missing = ", ".join(f"{k} {v}" for k, v in sorted(report.missing.items())) or "none"
    extra = ", ".join(f"{k} {v}" for k, v in sorted(report.not_expected.items()))
    if report.window_start is None:
        window = "the named tickets"
    else:
        window = f"updated since {report.window_start:%Y-%m-%d %H:%M} UTC"
    lines = [
        f"reconcile pass {outcome(report)}{' (dry run)' if report.dry_run else ''}: {window}",
        f"  tickets listed       {report.tickets_listed}"
        + (f" (offset: {report.offset_semantics})" if report.offset_semantics else ""),
        f"  tickets fetched      {report.tickets_fetched} ({report.tickets_gone} gone)",
        f"  facts missing        {missing} ({verb}, source api)",
    ]
    if extra:
        lines.append(f"  facts no webhook carries  {extra} ({verb})")
    if report.unreadable:
        lines.append(f"  facts unreadable     {report.unreadable} (see reconcile_fact_unreadable)")
    lines += [
        f"  corrections          {report.corrections} ({verb})",
        f"  API calls            {report.api_calls} ({report.api_retries} retried)",
        f"  time                 {report.seconds:.1f} s",
    ]
    if report.watermark is not None:
        lines.append(f"  watermark            {report.watermark:%Y-%m-%d %H:%M:%S} UTC")
    elif not report.dry_run and report.mode != "tickets":
        lines.append("  watermark            not advanced (the pass is not complete)")
    if report.note:
        lines.append(f"  note                 {report.note}")
    if report.error:
        lines.append(f"  error                {report.error}")
    if completeness is not None:
        lines.append(f"  webhook completeness {completeness.line()}")
    return "\n".join(lines)


def log_pass(report: PassReport) -> None:
    log.info(
        "reconcile_pass_done",
        pass_id=str(report.pass_id),
        outcome=outcome(report),
        dry_run=report.dry_run,
        tickets_listed=report.tickets_listed,
        tickets_fetched=report.tickets_fetched,
        tickets_gone=report.tickets_gone,
        missing=dict(report.missing),
        corrections=report.corrections,
        api_calls=report.api_calls,
        seconds=round(report.seconds, 2),
        error=report.error,
    )


async def serve_metrics(port: int) -> web.AppRunner | None:
    """`/metrics` and `/healthz` on `port` (0: none)."""
    if port == 0:
        return None
    register_build_info(REGISTRY)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, port=port).start()
    return runner
