"""Prometheus metrics of one ingress process, in a registry of its own (tests run many apps).

With `--processes N` each scrape reaches one process, so the processes share their figures
through prometheus_client's multiprocess mode: `supervise` gives the children a fresh
`PROMETHEUS_MULTIPROC_DIR`, every process writes its values there (prometheus_client picks
that up at import), and `/metrics` of any process reads all of them (`MultiProcessCollector`):
counters and histograms summed over the processes, the gauges as their `multiprocess_mode`
says. Gauges read at scrape time (`set_function`) do not work in that mode: each process sets
them from their functions every `REFRESH_SECONDS` and when it is scraped.

In one process, the two figures every webhook moves (`requests` by kind and status,
`publish_seconds`) are kept as plain numbers on the hot path and added to the prometheus_client
metrics in bulk when a scrape reads them: a labelled counter's `inc` and a histogram's `observe`
took a lock each and ~15 us together per webhook. With several processes they are written at
once, so that a scrape of any process counts every webhook the others answered.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from shared.build import register_build_info

# Confirms take ~1-5 ms on a healthy broker; the top buckets catch the publish deadline.
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How stale another process's gauges may be in a scrape (multiprocess mode only).
REFRESH_SECONDS = 1.0

Mode = Literal["livesum", "livemin", "livemax"]


def multiprocess_dir() -> str | None:
    """The directory the processes of one ingress share their metrics in (None: one process)."""
    return os.environ.get(MULTIPROC_ENV) or None


@dataclass(frozen=True)
class SpoolFigures:
    """The spool's gauges, read at scrape time (all 0 without a spool)."""

    bytes: Callable[[], float] = lambda: 0
    records: Callable[[], float] = lambda: 0
    oldest_seconds: Callable[[], float] = lambda: 0.0


class _Tally:
    """Observations of one unlabelled histogram, as bucket counts until `flush`."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._bounds = list(histogram._upper_bounds)  # ends with +Inf
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, amount: float) -> None:
        # The first bucket whose bound is >= amount: the one `Histogram.observe` increments.
        self._counts[bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def flush(self) -> None:
        histogram, counts = self._histogram, self._counts
        if not any(counts):
            return
        histogram._sum.inc(self._sum)
        for index, count in enumerate(counts):
            if count:
                histogram._buckets[index].inc(count)
                counts[index] = 0
        self._sum = 0.0


class IngressMetrics:
    def __init__(
        self,
        broker_connected: Callable[[], bool],
        in_flight: Callable[[], int],
        reading: Callable[[], int] = lambda: 0,
        spool: SpoolFigures | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.shared_dir = multiprocess_dir()
        # What a scrape reads: this process's registry, or every process's files.
        self._scraped = self.registry
        if self.shared_dir is not None:
            self._scraped = CollectorRegistry()
            MultiProcessCollector(self._scraped, self.shared_dir)  # type: ignore[no-untyped-call]
        self._read_gauges: list[tuple[Gauge, Callable[[], float]]] = []
        register_build_info(self.registry)
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
        self._publish_tally = _Tally(self.publish_seconds)
        # (kind, status) -> requests answered since the last refresh.
        self._answered: dict[tuple[str, int], int] = {}
        # Read at scrape time: the handler keeps a plain counter, no lock on the hot path.
        self.in_flight = self._gauge(
            "deskledger_ingress_in_flight",
            "Webhook requests being handled now",
            lambda: float(in_flight()),
            "livesum",
        )
        self.reading = self._gauge(
            "deskledger_ingress_reading_bodies",
            "Webhook requests whose body is still arriving (part of in_flight)",
            lambda: float(reading()),
            "livesum",
        )
        # With several processes: 0 when any of them is not connected.
        self.broker_connected = self._gauge(
            "deskledger_ingress_broker_connected",
            "1 while the RabbitMQ connection and channel are open",
            lambda: float(broker_connected()),
            "livemin",
        )
        self._spool_metrics(spool or SpoolFigures())

    def _gauge(self, name: str, text: str, read: Callable[[], float], mode: Mode) -> Gauge:
        """A gauge whose value is `read()` when scraped (with several processes: refreshed)."""
        gauge = Gauge(name, text, registry=self.registry, multiprocess_mode=mode)
        if self.shared_dir is None:
            gauge.set_function(read)
        else:
            self._read_gauges.append((gauge, read))
            gauge.set(read())
        return gauge

    def refresh(self) -> None:
        """Add the hot path's figures to the metrics, and write the gauges read at scrape time
        where the other processes see them."""
        self._publish_tally.flush()
        self._flush_counts()
        for gauge, read in self._read_gauges:
            gauge.set(read())

    def _flush_counts(self) -> None:
        if self._answered:
            answered, self._answered = self._answered, {}
            for (kind, status), count in answered.items():
                self.requests.labels(kind, str(status)).inc(count)

    def _spool_metrics(self, figures: SpoolFigures) -> None:
        gauges: tuple[tuple[str, str, Callable[[], float], Mode], ...] = (
            (
                "bytes",
                "Bytes the local spool takes on disk (segments not yet deleted)",
                figures.bytes,
                "livesum",
            ),
            (
                "records",
                "Spooled webhooks not yet confirmed by the broker",
                figures.records,
                "livesum",
            ),
            (
                "oldest_seconds",
                "Age of the oldest spooled webhook not yet forwarded (0: none)",
                figures.oldest_seconds,
                "livemax",
            ),
        )
        for name, text, read, mode in gauges:
            self._gauge(f"deskledger_ingress_spool_{name}", text, read, mode)
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
        """One request answered (in one process: in `requests` from the next scrape on)."""
        key = (kind, status)
        self._answered[key] = self._answered.get(key, 0) + 1
        if self.shared_dir is not None:
            self._flush_counts()

    def observe_publish(self, seconds: float) -> None:
        """One publish's time to its confirm or failure (in one process: in `publish_seconds`
        from the next scrape on)."""
        self._publish_tally.observe(seconds)
        if self.shared_dir is not None:
            self._publish_tally.flush()

    def exposition(self) -> bytes:
        self.refresh()
        return generate_latest(self._scraped)
