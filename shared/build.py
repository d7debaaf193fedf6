"""What is running: the installed DeskLedger's version, for `--version`, the first log line of
every command and the `deskledger_build_info` metric."""

from __future__ import annotations

import platform
import weakref
from importlib import metadata

from prometheus_client import REGISTRY, CollectorRegistry, Gauge


def _version() -> str:
    try:
        return metadata.version("deskledger")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


VERSION = _version()
PYTHON = platform.python_version()
# Weak: a registry's id may be reused once it is gone (tests make many).
_REGISTERED: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()


def register_build_info(registry: CollectorRegistry = REGISTRY) -> None:
    """Export `deskledger_build_info{version, python} 1` in `registry` (once per registry)."""
    if registry in _REGISTERED:
        return
    _REGISTERED.add(registry)
    info = Gauge(
        "deskledger_build_info",
        "Always 1; the labels say which DeskLedger and Python are running",
        ["version", "python"],
        registry=registry,
        # The ingress's processes share their metrics (multiprocess mode): one series.
        multiprocess_mode="max",
    )
    info.labels(VERSION, PYTHON).set(1)
