"""Prometheus metrics of one ingress process, in a registry of its own (tests run many apps)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Confirms take ~1-5 ms on a healthy broker; the top buckets catch the publish deadline.
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class SpoolFigures:
    """The spool's gauges, read at scrape time (all 0 without a spool)."""

    bytes: Callable[[], float] = lambda: 0
    records: Callable[[], float] = lambda: 0
    oldest_seconds: Callable[[], float] = lambda: 0.0


class IngressMetrics:
    def __init__(
        self,
        broker_connected: Callable[[], bool],
        in_flight: Callable[[], int],
        reading: Callable[[], int] = lambda: 0,
        spool: SpoolFigures | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "deskledger_ingress_requests",
            "Webhook requests answered, by kind and HTTP status",
            ("kind", "status"),
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "deskledger_ingress_publish_seconds",
            "Time from publish to the broker's confirm (or failure)",
            buckets=PUBLISH_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "deskledger_ingress_in_flight",
            "Webhook requests being handled now",
            registry=self.registry,
        )
        # Read at scrape time: the handler keeps a plain counter, no lock on the hot path.
        self.in_flight.set_function(lambda: float(in_flight()))
        self.reading = Gauge(
            "deskledger_ingress_reading_bodies",
            "Webhook requests whose body is still arriving (part of in_flight)",
            registry=self.registry,
        )
        self.reading.set_function(lambda: float(reading()))
        self.broker_connected = Gauge(
            "deskledger_ingress_broker_connected",
            "1 while the RabbitMQ connection and channel are open",
            registry=self.registry,
        )
        self.broker_connected.set_function(lambda: float(broker_connected()))
        self._spool_metrics(spool or SpoolFigures())

    def _spool_metrics(self, figures: SpoolFigures) -> None:
        gauges = (
            (
                "bytes",
                "Bytes the local spool takes on disk (segments not yet deleted)",
                figures.bytes,
            ),
            ("records", "Spooled webhooks not yet confirmed by the broker", figures.records),
            (
                "oldest_seconds",
                "Age of the oldest spooled webhook not yet forwarded (0: none)",
                figures.oldest_seconds,
            ),
        )
        for name, text, read in gauges:
            gauge = Gauge(f"deskledger_ingress_spool_{name}", text, registry=self.registry)
            gauge.set_function(read)
        self.spool_appended = Counter(
            "deskledger_ingress_spool_appended",
            "Webhooks written to the spool (and answered 200) because the broker did not confirm",
            registry=self.registry,
        )
        self.spool_forwarded = Counter(
            "deskledger_ingress_spool_forwarded",
            "Spooled webhooks forwarded to the broker and confirmed",
            registry=self.registry,
        )
        self.spool_failed = Counter(
            "deskledger_ingress_spool_failed",
            "Forwards of spooled webhooks that the broker did not confirm (retried later)",
            registry=self.registry,
        )
        self.spool_write_failed = Counter(
            "deskledger_ingress_spool_write_failed",
            "Webhooks the spool could not write (disk failing): answered 503",
            registry=self.registry,
        )

    def count(self, kind: str, status: int) -> None:
        self.requests.labels(kind, str(status)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
