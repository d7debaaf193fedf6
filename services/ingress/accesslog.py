"""The one line per webhook answered, written the cheap way.

Through structlog a line cost about a tenth of a webhook's CPU: seven processors, the standard
library's JSON encoder, and a flushed `print`, that is a `write` system call, per request. With
JSON logs (`DESKLEDGER_LOG_FORMAT=json`, every deployment's) the line here is the same JSON object
structlog renders (`timestamp`, `level`, `event`, `service`, `delivery_id`, then the fields),
encoded by msgspec, and the lines of one event-loop iteration go out in one write at the end of
it. Every webhook still gets its line, with its delivery id, so an operator can follow one
delivery from the ingress to the worker. A crash can lose the lines of the iteration it
interrupts (the webhooks of it were not answered yet either).

With the console format (a terminal) or a level above info, the line goes through structlog
as every other line does.

`DESKLEDGER_INGRESS_LOG_SAMPLE=N` (default 1: every line) keeps one `webhook_accepted` line in N,
each with `"sample": N` so that counting lines still estimates the traffic; refusals, spooled
webhooks and ignored pings are always logged. Sampled out, a delivery is still traced by its id
from the sender's 200 answer to the message (its id) and the worker's lines.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec
import structlog

log = structlog.get_logger()

_ENCODE = msgspec.json.Encoder().encode
# The only line that may be sampled.
ACCEPTED = "webhook_accepted"


class WebhookLog:
    """Writes `webhook_*` lines: `line(event, delivery_id, kind, status, duration_ms, **extra)`."""

    def __init__(
        self, service: str, level: str, fmt: str, sample: int = 1, stream: TextIO | None = None
    ) -> None:
        self._service = service
        self._sample = sample
        self._accepted = 0
        self._enabled = logging.getLevelNamesMapping()[level.upper()] <= logging.INFO
        self._fast = fmt == "json"
        self._stream = stream
        self._pending: list[bytes] = []

    def line(
        self, event: str, delivery_id: str, kind: str, status: int, duration_ms: float, **extra: str
    ) -> None:
        sample: dict[str, int] = {}
        if self._sample > 1 and event == ACCEPTED:
            self._accepted += 1
            if self._accepted < self._sample:
                return
            self._accepted = 0
            sample["sample"] = self._sample
        if not self._fast:
            log.info(event, kind=kind, status=status, duration_ms=duration_ms, **extra, **sample)
            return
        if not self._enabled:
            return
        fields: dict[str, Any] = {
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "level": "info",
            "event": event,
            "service": self._service,
            "delivery_id": delivery_id,
            "kind": kind,
            "status": status,
            "duration_ms": duration_ms,
        }
        if extra:
            fields.update(extra)
        if sample:
            fields.update(sample)
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(_ENCODE(fields))

    def flush(self) -> None:
        """Write the pending lines (at the end of the loop iteration, and at shutdown)."""
        if not self._pending:
            return
        text = (b"\n".join(self._pending) + b"\n").decode()
        self._pending.clear()
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write(text)
        stream.flush()
