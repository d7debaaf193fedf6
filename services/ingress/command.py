"""`deskledger ingress`: the webhook receiver, in one process or several on one port."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from types import FrameType
from typing import Any

from prometheus_client import multiprocess

from services import runner
from services.ingress.app import WEBHOOK_PATH, require_secrets
from services.ingress.metrics import MULTIPROC_ENV
from services.ingress.server import KEEPALIVE_SECONDS, run_process
from services.ingress.spool import check_writable
from services.runner import positive_int
from shared.errors import SettingsError
from shared.settings import Settings, settings_help

_FORWARDED = (signal.SIGTERM, signal.SIGINT)

DESCRIPTION = f"""\
Serve POST {WEBHOOK_PATH} on DESKLEDGER_HTTP_HOST:DESKLEDGER_HTTP_PORT.

Answers:
  200  {{"delivery_id": "<uuid>"}} only once the webhook is durable: RabbitMQ confirmed a
       persistent copy, or, when it does not, the local spool (DESKLEDGER_SPOOL_DIR) holds it
       on disk (fsynced) to be forwarded with the same delivery id when the broker is back;
       with `secret` and every `custom_blocks[].secret_key` redacted; also for ping, chat and
       unknown kinds. A ping without a valid secret gets 200 {{"delivery_id": null}} and
       nothing of it is kept.
  400  the body does not parse (bad_body) or the request is not well-formed HTTP
       (bad_framing; neither answer nor log quotes its bytes)
  401  `secret` missing or wrong
  408  the body took longer than DESKLEDGER_READ_TIMEOUT, or was still arriving when
       DESKLEDGER_MAX_BODY_READERS newer bodies needed its place
  413  the body exceeds DESKLEDGER_MAX_BODY_BYTES
  415  not application/json, application/x-www-form-urlencoded or multipart/form-data,
       or any Content-Encoding
  503  (with Retry-After) neither the broker nor the spool could keep it: no confirm within
       DESKLEDGER_PUBLISH_TIMEOUT or the broker is unreachable, and the spool is off, full
       (DESKLEDGER_SPOOL_MAX_BYTES: spool_full) or cannot write (spool_unavailable); or
       DESKLEDGER_MAX_IN_FLIGHT webhooks with a whole body are already being parsed or
       published (bodies still arriving are not counted)
Errors are JSON: {{"error": "<code>", "detail": "<text>"}}.

GET /healthz (alive), /readyz (not draining, and the broker connected or the spool has
room), /metrics (Prometheus; the spool's bytes, records, oldest age, forwards and failures).

The spool: each process writes to a slot of its own under
DESKLEDGER_SPOOL_DIR/DESKLEDGER_AMQP_PREFIX/ and forwards it, in order, at most
DESKLEDGER_SPOOL_FORWARD_RATE webhooks a second while live ones go straight to the broker;
it also takes over slots that no running process holds (one that was killed).

On SIGTERM or SIGINT /readyz turns 503, the listener stays open for
DESKLEDGER_DRAIN_SECONDS so a load balancer notices, in-flight webhooks finish, the spool is
forwarded for up to DESKLEDGER_PUBLISH_TIMEOUT more (the rest stays on disk for the next
start), and the process exits 0. Refuses to start (exit 2) without DESKLEDGER_SECRETS or
with a spool directory it cannot write; without a spool, exits 1 when RabbitMQ cannot be
reached at start (with one, it starts and spools).

In front of it, a load balancer should bound what aiohttp cannot: the time to send the
request head (e.g. nginx client_header_timeout 10s, HAProxy timeout http-request) and the
number of connections per client (docs/operations.md); its upstream idle timeout must
stay under the ingress's keep-alive of {KEEPALIVE_SECONDS:g} s.
"""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "ingress",
        help="receive UseDesk webhooks over HTTP and store them durably in RabbitMQ"
        " (or a local spool while it cannot confirm)",
        description=DESCRIPTION,
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        metavar="N",
        help=(
            "serve from N processes sharing the port (SO_REUSEPORT), each with its own broker "
            "connection and spool slot; /metrics of any of them covers all (a shared directory "
            "under TMPDIR), /readyz answers for the process it reaches; the parent forwards "
            "SIGTERM/SIGINT and exits when they have (default 1)"
        ),
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        require_secrets(settings)
        if settings.spool_dir is not None:
            check_writable(settings.spool_dir)
    except SettingsError as exc:
        return runner.refused("ingress", f"configuration error: {exc}", exc.exit_code)
    if args.processes == 1:
        return run_process(settings)
    return supervise(args.processes)


def supervise(count: int) -> int:
    """Run `count` single-process ingresses; exit when all have, 1 if any failed.

    A child that exits on its own takes the others down too: a half-size ingress is left to
    the orchestrator to restart, not hidden. The children share their metrics through a fresh
    directory (prometheus_client's multiprocess mode), so that a scrape of any of them covers
    all; it is removed when they have exited.
    """
    command = [sys.executable, "-m", "services", "ingress", "--processes", "1"]
    shared = tempfile.mkdtemp(prefix="deskledger-ingress-metrics-")
    environ = {**os.environ, MULTIPROC_ENV: shared}
    children: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        _signal_all(children, signum)

    previous = {signum: signal.signal(signum, forward) for signum in _FORWARDED}
    try:
        for _ in range(count):
            child = subprocess.Popen(command, env=environ)  # noqa: S603 - our own module
            children[child.pid] = child
        if stopping:
            _signal_all(children, signal.SIGTERM)
        failed = False
        while children:
            pid, code = _reap(children)
            multiprocess.mark_process_dead(pid, shared)  # type: ignore[no-untyped-call]
            # A child that a forwarded signal ended before it had installed its own handler
            # (still importing) stopped as asked; anything else is a failure.
            asked = stopping and code in (-signal.SIGTERM, -signal.SIGINT)
            if (code != 0 and not asked) or not stopping:
                failed = True
            if not stopping:
                stopping = True
                _signal_all(children, signal.SIGTERM)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        shutil.rmtree(shared, ignore_errors=True)
    return 1 if failed else 0


def _reap(children: dict[int, subprocess.Popen[bytes]]) -> tuple[int, int]:
    """Wait for any child to exit; its pid and exit code (os.wait, so Popen never reaps behind
    us)."""
    pid, status = os.wait()
    child = children.pop(pid)
    child.returncode = os.waitstatus_to_exitcode(status)
    return pid, child.returncode


def _signal_all(children: dict[int, subprocess.Popen[bytes]], signum: int) -> None:
    for pid in children:
        os.kill(pid, signum)
