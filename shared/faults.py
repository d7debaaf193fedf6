"""Test-only fault points: `DESKLEDGER_FAULT_POINT=<name>` makes the process SIGKILL itself
when it reaches the point of that name.

The fault tests use them to kill a worker just before or after its COMMIT, and a replay after
its bulk copy or inside its swap, and then prove that nothing was lost or applied twice. In
production the variable is unset and a fault point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

import structlog

log = structlog.get_logger()

ENV = "DESKLEDGER_FAULT_POINT"
WORKER_BEFORE_COMMIT = "before_commit"
WORKER_AFTER_COMMIT = "after_commit"
REPLAY_AFTER_COPY = "replay_after_copy"
REPLAY_BEFORE_SWAP_COMMIT = "replay_before_swap_commit"


def fault_point(name: str) -> None:
    """SIGKILL this process here when the fault tests asked for the point `name`."""
    if os.environ.get(ENV) == name:
        log.warning("fault_point_reached", point=name)
        os.kill(os.getpid(), signal.SIGKILL)
