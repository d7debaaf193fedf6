"""deploy/observability/ uses only metrics the code exports (issue 17): every name in the alert
rules and the dashboard is one a DeskLedger registry serves (or RabbitMQ's plugin, named here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY, CollectorRegistry

import services.reconcile.report
import services.worker.metrics
from services.ingress.metrics import IngressMetrics, SpoolFigures
from shared.build import register_build_info

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
# RabbitMQ's Prometheus plugin, /metrics/detailed (queue_coarse_metrics, queue_consumer_count).
RABBITMQ = {
    "rabbitmq_detailed_queue_messages",
    "rabbitmq_detailed_queue_messages_ready",
    "rabbitmq_detailed_queue_messages_unacked",
    "rabbitmq_detailed_queue_consumers",
}
NAME = re.compile(r"\b((?:deskledger|rabbitmq)_[a-z_]+)\b")
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}


def _series(registry: CollectorRegistry) -> set[str]:
    """The series names a registry exports (a counter `x` is `x_total`, and so on)."""
    names = set()
    for family in registry.collect():
        suffixes = SUFFIXES.get(family.type)
        names |= {family.name + s for s in suffixes} if suffixes else {family.name}
    return names


def exported() -> set[str]:
    register_build_info(REGISTRY)
    ingress = IngressMetrics(lambda: True, lambda: 0, spool=SpoolFigures())
    reconcile = services.reconcile.report.REGISTRY
    return _series(REGISTRY) | _series(ingress.registry) | _series(reconcile)


def test_a_worker_exports_no_reconcile_figures() -> None:
    """Only `deskledger reconcile` serves them: a worker's zeros (a completeness of 0, a last
    pass in 1970) fired two alerts on every deployment that never reconciles."""
    assert services.reconcile.report  # imported, as every command imports it
    reconcile = {n for n in _series(REGISTRY) if "reconcile" in n or "completeness" in n}
    assert not reconcile


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((OBSERVABILITY / "dashboard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_the_alert_rules_use_exported_metrics_only() -> None:
    names = exported() | RABBITMQ
    used = {n for expr in rule_expressions() for n in NAME.findall(expr)}
    assert used
    assert used <= names, sorted(used - names)


def test_the_dashboard_uses_exported_metrics_only() -> None:
    names = exported() | RABBITMQ
    used = {n for expr in dashboard_expressions() for n in NAME.findall(expr)}
    assert used
    assert used <= names, sorted(used - names)


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    used = " ".join(dashboard_expressions())
    for metric in (
        "deskledger_ingress_requests_total",
        "deskledger_ingress_publish_seconds_bucket",
        "deskledger_ingress_spool_records",
        "rabbitmq_detailed_queue_messages_ready",
        "deskledger_worker_deliveries_total",
        "deskledger_worker_lag_seconds_bucket",
        "deskledger_worker_suspected_gaps_total",
        "deskledger_webhook_completeness_ratio",
    ):
        assert metric in used, metric


def test_every_alert_points_to_its_runbook_section() -> None:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    operations = (ROOT / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in operations.splitlines()
        if line.startswith("#")
    }
    for group in rules["groups"]:
        for rule in group["rules"]:
            runbook = rule["annotations"]["runbook"]
            assert runbook.startswith("docs/operations.md#"), rule["alert"]
            assert runbook.split("#", 1)[1] in anchors, (rule["alert"], runbook)


def test_the_compose_monitoring_profile_mounts_the_files_it_provisions() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    mounted = [
        volume.split(":")[0]
        for name in ("prometheus", "grafana")
        for volume in compose["services"][name]["volumes"]
    ]
    assert set(mounted) >= {
        "./observability/prometheus.yml",
        "./observability/alerts.yaml",
        "./observability/dashboard.json",
    }
    for path in mounted:
        assert (ROOT / "deploy" / path).is_file(), path


# Alert-table rows whose runbook is a section of another name.
RUNBOOK_OF = {
    "spool not draining": "spooling",
    "spool filling": "spooling",
    "wrong secret": "rotate-the-usedesk-secret-without-downtime",
    "webhooks lost": "reconcile-with-usedesks-api-backfill-schedule-completeness",
    "reconcile stalled": "reconcile-with-usedesks-api-backfill-schedule-completeness",
}


def test_every_row_of_the_alert_table_has_a_runbook_section() -> None:
    # The SQL alerts (suspected gaps, event age) are not in alerts.yaml: only this holds them.
    operations = (ROOT / "docs" / "operations.md").read_text()
    table = operations.split("## What to alert on", 1)[1].split("\n\n")[2]
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert "suspected gaps" in rows
    assert "event age" in rows
    runbook = operations.split("## Runbook", 1)[1]
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in operations.splitlines()
        if line.startswith("#")
    }
    sections = {
        line[4:].strip().lower() for line in runbook.splitlines() if line.startswith("### ")
    }
    for row in rows:
        target = RUNBOOK_OF.get(row)
        assert row in sections or target in anchors, row
