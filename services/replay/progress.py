"""Progress of a long scan: a tqdm bar on a terminal, structured log lines everywhere else.

Operators watch a replay in a terminal; log collectors watch it in production, where a bar's
carriage returns would be noise. So: a bar with rate and ETA when stderr is a terminal, and
otherwise a `replay_progress` line every few seconds with the same numbers.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import structlog
from tqdm import tqdm

log = structlog.get_logger()


class Progress:
    def __init__(
        self, phase: str, total: int, interval: float = 5.0, stream: TextIO | None = None
    ) -> None:
        out = stream if stream is not None else sys.stderr
        self.phase = phase
        self.total = total
        self.done = 0
        self.interval = interval
        self.started = time.monotonic()
        self._logged = self.started
        self._bar: tqdm[Any] | None = None
        if out.isatty():
            self._bar = tqdm(
                total=total, desc=phase, unit=" events", unit_scale=True, file=out, leave=True
            )

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def advance(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
            return
        now = time.monotonic()
        if now - self._logged >= self.interval:
            self._logged = now
            self._log("replay_progress")

    def close(self, **details: object) -> None:
        """The phase is over: a last line, with whatever else the caller knows about it."""
        self.total = self.done  # the total was an estimate
        if self._bar is not None:
            self._bar.total = self.done
            self._bar.refresh()
            self._bar.close()
        self._log("replay_phase_done", **details)

    def _log(self, event: str, **details: object) -> None:
        seconds = self.seconds
        rate = self.done / seconds if seconds > 0 else 0.0
        remaining = max(0, self.total - self.done)
        log.info(
            event,
            phase=self.phase,
            events_done=self.done,
            events_total=self.total,
            events_per_second=round(rate),
            eta_seconds=round(remaining / rate, 1) if rate > 0 else None,
            seconds=round(seconds, 2),
            **details,
        )
