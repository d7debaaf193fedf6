"""Progress of a pass: a tqdm bar on a terminal, a `reconcile_progress` log line every few
seconds otherwise (log collectors do not want a bar's carriage returns)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

import structlog
from tqdm import tqdm

if TYPE_CHECKING:
    from services.reconcile.passes import PassReport

log = structlog.get_logger()


class Progress:
    def __init__(self, total: int, interval: float = 5.0, stream: TextIO | None = None) -> None:
        out = stream if stream is not None else sys.stderr
        self.total = total
        self.done = 0
        self.interval = interval
        self._logged = time.monotonic()
        self._bar: tqdm[Any] | None = None
        if out.isatty() and total:
            self._bar = tqdm(total=total, desc="tickets", unit=" tickets", file=out)

    def advance(self, report: PassReport) -> None:
        self.done += 1
        missing = sum(report.missing.values())
        if self._bar is not None:
            self._bar.set_postfix(missing=missing, corrections=report.corrections, refresh=False)
            self._bar.update(1)
            return
        now = time.monotonic()
        if now - self._logged >= self.interval:
            self._logged = now
            log.info(
                "reconcile_progress",
                tickets_done=self.done,
                tickets_total=self.total,
                facts_missing=missing,
                corrections=report.corrections,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
