"""structlog, configured once per process: JSON lines (or a console renderer on a terminal).

Every line carries `timestamp`, `level`, `event` and `service`; context variables bound with
`bind_contextvars(delivery_id=..., ticket_id=...)` follow a delivery from HTTP to commit.
Values of keys named `secret` / `secret_key` are masked wherever they sit in the event dict.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

SECRET_KEYS = frozenset({"secret", "secret_key", "secrets", "password"})
MASK = "***"
_MAX_DEPTH = 20


def _mask(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {k: (MASK if k in SECRET_KEYS else _mask(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_mask(item, depth + 1) for item in value)
    return value


def mask_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace the value of every `secret`/`secret_key` key, at any depth, with `***`."""
    for key, value in list(event_dict.items()):
        event_dict[key] = MASK if key in SECRET_KEYS else _mask(value)
    return event_dict


def configure_logging(
    service: str, level: str = "info", fmt: str = "json", stream: TextIO | None = None
) -> None:
    """Configure structlog for this process; safe to call again (tests, subprocesses)."""
    out = stream if stream is not None else sys.stderr

    def add_service(
        _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event_dict.setdefault("service", service)
        return event_dict

    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            add_service,
            mask_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
