"""`deskledger migrate`: bring the database schema up to date."""

from __future__ import annotations

import argparse
from typing import Any

import structlog

from services import runner
from shared.db import load_migrations, migrate
from shared.settings import Settings, settings_help

log = structlog.get_logger()


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "migrate",
        help="create the database if it is missing and apply pending migrations",
        description=(
            "Create the database named by DATABASE_URL if it does not exist, then apply the "
            "numbered SQL files of shared/migrations/ that are not applied yet, each in its own "
            "transaction, under an advisory lock (concurrent runs are safe). Refuses to run when "
            "an applied file was changed. Exit 0 when the schema is up to date."
        ),
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--list", action="store_true", help="list the migration files shipped and exit"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.list:
        for migration in load_migrations():
            print(f"{migration.name}  {migration.checksum[:12]}")
        return 0
    return runner.run("migrate", settings, lambda: _migrate(settings), uses="PostgreSQL")


async def _migrate(settings: Settings) -> int:
    applied = await migrate(settings.database_url)
    log.info("migrate_done", applied=applied, count=len(applied))
    return 0
