"""`deskledger`: one console script, one subcommand per service.

Each subcommand lives in its service's `command.py`, which exposes `register(subparsers)`;
settings are read after parsing so that `--help` works with no environment at all.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol

from shared.build import VERSION
from shared.errors import SettingsError
from shared.settings import Settings, load_settings, settings_help

# One module per subcommand, in the order `--help` lists them.
COMMAND_MODULES = (
    "services.migrate",
    "services.ingress.command",
    "services.worker.command",
    "services.replay.command",
    "services.status",
    "services.ticket",
    "services.dlq",
    "services.reconcile.command",
)


class Command(Protocol):
    def __call__(self, args: argparse.Namespace, settings: Settings) -> int: ...


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deskledger",
        description=(
            "DeskLedger keeps a helpdesk's history: it receives UseDesk webhooks, stores them "
            "durably in RabbitMQ, and turns them into an append-only PostgreSQL event store "
            "with ticket projections that can be rebuilt at any time."
        ),
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"deskledger {VERSION}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"deskledger: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    command: Command = args.run
    sys.exit(command(args, settings))
