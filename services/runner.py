"""How every `deskledger` command runs: logging, the event loop, and the way it fails.

`run(service, settings, main)` configures structlog for `service`, runs `main()` on uvloop, and
turns every expected failure into one line on stderr, one structured log line and an exit
status:

- a `DeskLedgerError` (what DeskLedger itself refuses): its message, its `exit_code` (1 unless
  the error says otherwise, e.g. a busy replay's 3);
- an unreachable or failing PostgreSQL or RabbitMQ (`OSError`, asyncpg's and aio-pika's
  errors): the error and where the command looked for them, 1.

Argument checks are argparse types (`positive_int`, `positive_float`), so a bad option is
refused by argparse itself with exit status 2 and the usage line, before anything runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import structlog
import uvloop
from aio_pika.exceptions import AMQPError

from shared.build import PYTHON, VERSION, register_build_info
from shared.errors import DeskLedgerError
from shared.logging import configure_logging
from shared.settings import Settings

log = structlog.get_logger()

EXIT_FAILED = 1
_INFRASTRUCTURE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, AMQPError)


def run(
    service: str,
    settings: Settings,
    main: Callable[[], Coroutine[Any, Any, int]],
    *,
    uses: str = "PostgreSQL and RabbitMQ",
    hint: str = "",
) -> int:
    """Run `main()` as the command `service`; its exit status (see the module doc).

    `uses` names the services the command talks to (a failure's message gives the URLs it
    tried, passwords masked); `hint` is added to that message (what the failure left behind).
    """
    configure_logging(service, settings.log_level, settings.log_format)
    # The first line of every command says what runs; the metric says it to Prometheus.
    log.info("deskledger_started", command=service, version=VERSION, python=PYTHON)
    register_build_info()
    try:
        return run_loop(main())
    except DeskLedgerError as exc:
        return failed(service, str(exc), exc.exit_code)
    except _INFRASTRUCTURE as exc:
        urls = {
            "PostgreSQL": f"PostgreSQL at {settings.safe_database_url}",
            "RabbitMQ": f"RabbitMQ at {settings.safe_amqp_url}",
        }
        where = ", ".join(text for name, text in urls.items() if name in uses)
        message = f"{type(exc).__name__}: {exc} ({where})" + (f"; {hint}" if hint else "")
        return failed(service, message, EXIT_FAILED)


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """`main` on uvloop (`uvloop.run`, not the deprecated `uvloop.install`)."""
    result: int = uvloop.run(main)
    return result


def failed(service: str, message: str, status: int) -> int:
    """A command that ran and failed: one log line, one stderr line, `status`."""
    log.error(f"{service}_failed", error=message)
    return refused(service, message, status)


def refused(service: str, message: str, status: int = 2) -> int:
    """A command refused before it started (a bad combination of options or settings): one
    stderr line only, since nothing ran and logging is not configured yet."""
    print(f"deskledger {service}: {message}", file=sys.stderr)
    return status


def positive_int(raw: str) -> int:
    """argparse type: a whole number of at least 1."""
    return int(_positive(raw, int, "a whole number of at least 1"))


def positive_float(raw: str) -> float:
    """argparse type: a number greater than 0 (seconds, a rate)."""
    return _positive(raw, float, "a number greater than 0")


def _positive(raw: str, number: Callable[[str], float], expected: str) -> float:
    try:
        value = number(raw)
    except ValueError:
        value = 0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {raw!r}")
    return value
