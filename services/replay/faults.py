"""Test-only fault points: `DESKLEDGER_FAULT_POINT=<name>` makes the replay SIGKILL itself there.

The interruption tests use them to prove that a replay killed at any step leaves the live
projections as they were and nothing a later replay trips over.
"""

from __future__ import annotations

import os
import signal

import structlog

log = structlog.get_logger()

AFTER_COPY = "replay_after_copy"
BEFORE_SWAP_COMMIT = "replay_before_swap_commit"


def fault_point(name: str) -> None:
    if os.environ.get("DESKLEDGER_FAULT_POINT", "") == name:
        log.warning("fault_point_reached", point=name)
        os.kill(os.getpid(), signal.SIGKILL)
